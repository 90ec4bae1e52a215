//! Image names as the kubelet sends them, normalized the way docker and containerd do
//! (`busybox` is `docker.io/library/busybox:latest`).

use oci_client::Reference;

use super::ImageError;

/// Parses and normalizes an image reference. A reference without tag or digest gets `latest`.
///
/// The grammar is docker's (`distribution/reference`), checked by hand: oci-spec's parser
/// compiles a regex whose Unicode `\w{0,127}` makes a ~7 MB automaton that stays in a static
/// for the daemon's life.
pub fn parse(name: &str) -> Result<Reference, ImageError> {
    let name = name.trim();
    let invalid = |reason: &str| ImageError::InvalidReference {
        reference: name.into(),
        reason: reason.into(),
    };
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    let (rest, digest) = match name.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (name, None),
    };
    // A colon after the last slash starts the tag; one before it is a registry port.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (path, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    let components: Vec<&str> = path.split('/').collect();
    let (first, others) = components.split_first().expect("split yields one item");
    let first_ok = is_path_component(first) || (!others.is_empty() && is_domain(first));
    if !first_ok || !others.iter().all(|c| is_path_component(c)) {
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(invalid("repository name must be lowercase"));
        }
        return Err(invalid("invalid reference format"));
    }
    if tag.is_some_and(|t| !is_tag(t)) {
        return Err(invalid("invalid tag"));
    }
    if let Some(d) = digest {
        check_digest(d).map_err(invalid)?;
    }
    let (registry, repository) = split_domain(path);
    if repository.len() > 255 {
        return Err(invalid(
            "repository name must not be longer than 255 characters",
        ));
    }
    if repository.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(invalid("repository name must be lowercase"));
    }
    let tag = tag.map(str::to_string);
    Ok(match (tag, digest) {
        (Some(t), Some(d)) => Reference::with_tag_and_digest(registry, repository, t, d.into()),
        (None, Some(d)) => Reference::with_digest(registry, repository, d.into()),
        (t, None) => Reference::with_tag(registry, repository, t.unwrap_or("latest".into())),
    })
}

/// `[a-z0-9]+` joined by `.`, `_`, `__` or any run of `-`.
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// `host(.host)*(:port)?` with hosts of letters, digits and inner hyphens.
fn is_domain(d: &str) -> bool {
    let (host, port) = match d.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    host.split('.').all(|part| {
        let b = part.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
    })
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn is_tag(t: &str) -> bool {
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b.iter().all(|x| word(*x) || *x == b'.' || *x == b'-')
}

/// `algorithm:hex` with a supported algorithm and the hex length it implies.
fn check_digest(d: &str) -> Result<(), &'static str> {
    let (algorithm, hex) = d.split_once(':').ok_or("invalid digest format")?;
    let algorithm_ok = algorithm.split(['-', '_', '+', '.']).all(|part| {
        part.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
            && part.bytes().all(|b| b.is_ascii_alphanumeric())
    });
    if !algorithm_ok || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("invalid digest format");
    }
    let want = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err("unsupported digest algorithm"),
    };
    if hex.len() != want {
        return Err("invalid digest length");
    }
    Ok(())
}

/// Docker's normalization: no registry means `docker.io`, and a one-part name there lives in
/// `library/`.
fn split_domain(name: &str) -> (String, String) {
    let (mut domain, mut rest) = match name.split_once('/') {
        Some((left, right)) if left.contains(['.', ':']) || left == "localhost" => {
            (left.to_string(), right.to_string())
        }
        _ => ("docker.io".to_string(), name.to_string()),
    };
    if domain == "index.docker.io" {
        domain = "docker.io".into();
    }
    if domain == "docker.io" && !rest.contains('/') {
        rest = format!("library/{rest}");
    }
    (domain, rest)
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
    fn parses_as_the_reference_grammar_does() {
        let d = format!("sha256:{}", "0123456789abcdef".repeat(4));
        let good = [
            "busybox".to_string(),
            "busybox:1.36".into(),
            "library/busybox".into(),
            "docker.io/busybox".into(),
            "index.docker.io/x/y:t".into(),
            "localhost/foo".into(),
            "localhost:5000/foo/bar:v1.2-rc_3".into(),
            "my-registry.example.com/a/b/c".into(),
            "127.0.0.1:5000/test/busybox".into(),
            "a.b_c__d---e/f".into(),
            "x:5000".into(),
            format!("quay.io/x/y:tag@{d}"),
            format!("x@{d}"),
            format!("x:{}", "t".repeat(128)),
        ];
        let bad = [
            "a b".to_string(),
            "x@sha256:zz".into(),
            "Upper".into(),
            "UPPER/case".into(),
            "x:.tag".into(),
            "x:".into(),
            "x/".into(),
            "/x".into(),
            "x//y".into(),
            "x_-y".into(),
            "-x/y".into(),
            "host:port/x".into(),
            format!("x:{}", "t".repeat(129)),
            format!("x@md5:{}", "a".repeat(32)),
            format!("x@sha256:{}", "a".repeat(63)),
            format!("x@{d}@{d}"),
            format!("{}/x", "a".repeat(256)),
        ];
        for name in &good {
            let r = parse(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            // The same result as oci-spec's regex parser.
            let theirs: Reference = name.parse().unwrap();
            assert_eq!(r.whole(), theirs.whole(), "{name}");
            assert_eq!(
                (r.registry(), r.repository(), r.tag(), r.digest()),
                (
                    theirs.registry(),
                    theirs.repository(),
                    theirs.tag(),
                    theirs.digest()
                ),
                "{name}"
            );
        }
        for name in &bad {
            assert!(
                matches!(parse(name), Err(ImageError::InvalidReference { .. })),
                "{name} is accepted"
            );
        }
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
