//! Class names: from the config, else the bundled ImageNet-1k list for 1000-class checkpoints.

/// The bundled list: see the header of `imagenet_labels.txt` for how it was made.
const IMAGENET_1K: &str = include_str!("imagenet_labels.txt");

/// The 1000 ImageNet-1k class names in index order ("tench, Tinca tinca", ...).
pub(crate) fn imagenet_1k() -> Vec<String> {
    IMAGENET_1K
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// Whether `labels` are only placeholders: `LABEL_0, LABEL_1, ...` is what transformers writes
/// into `id2label` when a model was created without class names.
pub(crate) fn are_placeholders(labels: &[String]) -> bool {
    labels
        .iter()
        .enumerate()
        .all(|(i, l)| l.strip_prefix("LABEL_") == Some(i.to_string().as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_imagenet_list() {
        let l = imagenet_1k();
        assert_eq!(l.len(), 1000);
        assert_eq!(l[0], "tench, Tinca tinca");
        assert_eq!(l[1], "goldfish, Carassius auratus");
        assert_eq!(l[207], "golden retriever");
        assert_eq!(l[999], "toilet tissue, toilet paper, bathroom tissue");
        assert!(l.iter().all(|s| !s.is_empty() && s.trim() == s));
    }

    #[test]
    fn placeholders() {
        let p: Vec<String> = (0..3).map(|i| format!("LABEL_{i}")).collect();
        assert!(are_placeholders(&p));
        let q = vec!["LABEL_0".to_string(), "dog".into()];
        assert!(!are_placeholders(&q));
        let r = vec!["LABEL_1".to_string()];
        assert!(!are_placeholders(&r));
    }
}
