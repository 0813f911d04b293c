//! Image references as Kubernetes and Docker write them (`busybox`,
//! `busybox:1.36`, `ghcr.io/org/app@sha256:...`), normalised to one form.

/// The registry assumed when a reference names none.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `registry/repository`, e.g. `docker.io/library/busybox`.
    pub repository: String,
    /// Tag (`latest` when neither tag nor digest is given).
    pub tag: Option<String>,
    /// `sha256:...` digest, when pinned.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses `name[:tag][@digest]`. Returns `None` for an empty or malformed
    /// reference.
    pub fn parse(reference: &str) -> Option<ImageRef> {
        let reference = reference.trim();
        if reference.is_empty() || reference.contains(char::is_whitespace) {
            return None;
        }
        let (name_tag, digest) = match reference.split_once('@') {
            Some((n, d)) => {
                let (algo, hex) = d.split_once(':')?;
                if algo != "sha256"
                    || hex.len() != 64
                    || !hex.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return None;
                }
                (n, Some(d.to_ascii_lowercase()))
            }
            None => (reference, None),
        };
        // A tag is after the last ':' that follows the last '/'.
        let last_slash = name_tag.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => (
                &name_tag[..last_slash + i],
                Some(name_tag[last_slash + i + 1..].to_string()),
            ),
            None => (name_tag, None),
        };
        if name.is_empty() || tag.as_deref() == Some("") {
            return None;
        }
        let mut parts: Vec<&str> = name.split('/').collect();
        let has_registry = parts.len() > 1
            && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost");
        let registry = if has_registry {
            parts.remove(0).to_string()
        } else {
            DEFAULT_REGISTRY.to_string()
        };
        let mut path = parts.join("/");
        if registry == DEFAULT_REGISTRY && !path.contains('/') {
            path = format!("library/{path}");
        }
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_string()),
            (t, _) => t,
        };
        Some(ImageRef {
            repository: format!("{registry}/{}", path.to_ascii_lowercase()),
            tag,
            digest,
        })
    }

    /// The canonical name stored for a tagged reference
    /// (`docker.io/library/busybox:latest`), if it has a tag.
    pub fn tagged_name(&self) -> Option<String> {
        self.tag
            .as_ref()
            .map(|t| format!("{}:{}", self.repository, t))
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() {
        let r = ImageRef::parse("busybox").expect("parse");
        assert_eq!(
            r.tagged_name().as_deref(),
            Some("docker.io/library/busybox:latest")
        );
        let r = ImageRef::parse("me/app:1.0").expect("parse");
        assert_eq!(r.tagged_name().as_deref(), Some("docker.io/me/app:1.0"));
        let r = ImageRef::parse("localhost:5000/app").expect("parse");
        assert_eq!(
            r.tagged_name().as_deref(),
            Some("localhost:5000/app:latest")
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("ghcr.io/o/app@{d}")).expect("parse");
        assert_eq!(r.repository, "ghcr.io/o/app");
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert!(ImageRef::parse("").is_none());
        assert!(ImageRef::parse("app@sha256:zz").is_none());
        assert!(ImageRef::parse("app:").is_none());
    }
}
