//! Image decoding, preprocessing (PIL-exact antialiased resize, normalisation) and display
//! (bilinear upsampling of maps, min-max normalisation, jet colormap, overlays).
