//! Image names as the kubelet sends them, normalized the way docker and containerd do
//! (`busybox` is `docker.io/library/busybox:latest`).

use oci_client::Reference;

use super::ImageError;

/// Parses and normalizes an image reference. A reference without tag or digest gets `latest`.
pub fn parse(name: &str) -> Result<Reference, ImageError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ImageError::InvalidReference {
            reference: name.into(),
            reason: "empty".into(),
        });
    }
    let r = name
        .parse::<Reference>()
        .map_err(|e| ImageError::InvalidReference {
            reference: name.into(),
            reason: e.to_string(),
        })?;
    if r.repository().bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(ImageError::InvalidReference {
            reference: name.into(),
            reason: "repository name must be lowercase".into(),
        });
    }
    Ok(r)
}

/// `registry/repository`, e.g. `docker.io/library/busybox`.
pub fn repo_name(r: &Reference) -> String {
    format!("{}/{}", r.registry(), r.repository())
}

/// `registry/repository:tag` when the reference has a tag.
pub fn repo_tag(r: &Reference) -> Option<String> {
    r.tag().map(|t| format!("{}:{t}", repo_name(r)))
}

/// `registry/repository@digest`.
pub fn repo_digest(r: &Reference, digest: &str) -> String {
    format!("{}@{digest}", repo_name(r))
}

/// True when `s` looks like `sha256:<64 hex>`.
pub fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_normalized_like_docker() {
        let r = parse("busybox").unwrap();
        assert_eq!(repo_tag(&r).unwrap(), "docker.io/library/busybox:latest");
        let r = parse("registry.k8s.io/pause:3.10").unwrap();
        assert_eq!(repo_tag(&r).unwrap(), "registry.k8s.io/pause:3.10");
        let r = parse("127.0.0.1:5000/test/busybox").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(repo_tag(&r).unwrap(), "127.0.0.1:5000/test/busybox:latest");
    }

    #[test]
    fn digest_references_keep_their_digest() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = parse(&format!("quay.io/x/y@{d}")).unwrap();
        assert_eq!(r.digest(), Some(d.as_str()));
        assert_eq!(repo_digest(&r, &d), format!("quay.io/x/y@{d}"));
    }

    #[test]
    fn garbage_is_an_invalid_reference() {
        for bad in ["", "UPPER/case", "a b", "x@sha256:zz"] {
            assert!(
                matches!(parse(bad), Err(ImageError::InvalidReference { .. })),
                "{bad}"
            );
        }
    }
}
