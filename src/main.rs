fn main() {
    for a in agcam::gpu::list_adapters(None) {
        println!("{a}");
    }
}
