//! `agcam shaders --out DIR`: every shader variant as a complete WGSL file, with a manifest.

use std::process::Command;

#[test]
fn shaders_writes_every_variant_with_a_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("shaders");
    let o = Command::new(env!("CARGO_BIN_EXE_agcam"))
        .args(["shaders", "--out", out.to_str().unwrap()])
        .output()
        .expect("run agcam");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let shaders = manifest["shaders"].as_array().expect("a list of shaders");
    let on_disk = std::fs::read_dir(&out).unwrap().count();
    assert_eq!(
        on_disk,
        shaders.len() + 1,
        "one file per entry, plus the manifest"
    );
    let mut f16_on_gl = 0;
    for entry in shaders {
        let file = entry["file"].as_str().unwrap();
        let kernel = entry["kernel"].as_str().unwrap();
        let source = std::fs::read_to_string(out.join(file)).unwrap();
        // A complete module: the entry point and every helper it calls are in the file.
        assert!(source.contains(&format!("fn {kernel}(")), "{file}");
        assert!(
            source.contains("fn linear_workgroup("),
            "{file}: common helpers"
        );
        for (constant, value) in entry["constants"].as_object().unwrap() {
            let value = value.as_u64().unwrap();
            let set = source
                .lines()
                .find(|l| l.starts_with(&format!("override {constant}:")))
                .unwrap_or_else(|| panic!("{file}: override {constant}"));
            let literal = if set.contains("bool") {
                (value != 0).to_string()
            } else {
                format!("{value}u")
            };
            assert!(set.contains(&format!("= {literal};")), "{file}: {set}");
        }
        let targets: Vec<&str> = entry["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert!(!targets.is_empty(), "{file}");
        let f16 = entry["arithmetic"] == "f16";
        assert_eq!(
            f16,
            source.starts_with("// ") && source.contains("enable f16;")
        );
        f16_on_gl += (f16 && targets.contains(&"gl")) as usize;
    }
    assert_eq!(f16_on_gl, 0, "OpenGL has no f16 arithmetic in wgpu");
    assert!(shaders
        .iter()
        .any(|e| e["file"] == "gemm_tiled-w_f16-f16.wgsl"));
}
