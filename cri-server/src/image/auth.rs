//! Registry credentials: from the PullImage request's `AuthConfig`, else from a docker
//! `config.json`. Identity tokens (OAuth2 refresh tokens) are exchanged for an access token at
//! the registry's token realm, as docker does.

use std::path::Path;

use base64::Engine;
use k8s_cri::v1::AuthConfig;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

use super::ImageError;

#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    /// A bearer token sent as it is (`registry_token`).
    Bearer(String),
    /// An OAuth2 refresh token to exchange at the token realm (`identity_token`).
    IdentityToken {
        username: String,
        token: String,
    },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Anonymous => f.write_str("Anonymous"),
            Credential::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credential::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Credential::IdentityToken { .. } => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

impl Credential {
    /// A stable key for caching per-credential clients, without keeping the secret readable.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let raw = match self {
            Credential::Anonymous => return "anonymous".into(),
            Credential::Basic { username, password } => format!("basic\0{username}\0{password}"),
            Credential::Bearer(t) => format!("bearer\0{t}"),
            Credential::IdentityToken { username, token } => {
                format!("identity\0{username}\0{token}")
            }
        };
        hex::encode(Sha256::digest(raw))
    }
}

/// Turns a CRI `AuthConfig` into a credential; an empty config is anonymous.
pub fn from_cri(auth: &AuthConfig) -> Result<Credential, ImageError> {
    from_fields(
        &auth.username,
        &auth.password,
        &auth.auth,
        &auth.identity_token,
        &auth.registry_token,
    )
}

fn from_fields(
    username: &str,
    password: &str,
    auth: &str,
    identity_token: &str,
    registry_token: &str,
) -> Result<Credential, ImageError> {
    if !registry_token.is_empty() {
        return Ok(Credential::Bearer(registry_token.to_string()));
    }
    let (mut user, mut pass) = (username.to_string(), password.to_string());
    if !auth.is_empty() {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|e| ImageError::BadCredentials(format!("auth is not base64: {e}")))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| ImageError::BadCredentials("auth is not UTF-8".into()))?;
        let (u, p) = decoded
            .split_once(':')
            .ok_or_else(|| ImageError::BadCredentials("auth is not user:password".into()))?;
        (user, pass) = (u.to_string(), p.to_string());
    }
    if !identity_token.is_empty() {
        return Ok(Credential::IdentityToken {
            username: user,
            token: identity_token.to_string(),
        });
    }
    if user.is_empty() && pass.is_empty() {
        return Ok(Credential::Anonymous);
    }
    Ok(Credential::Basic {
        username: user,
        password: pass,
    })
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: std::collections::HashMap<String, DockerAuth>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DockerAuth {
    auth: String,
    username: String,
    password: String,
    identitytoken: String,
    registrytoken: String,
}

/// Looks `registry` up in a docker config.json. A missing file means no credentials; a
/// malformed one is an error naming the file.
pub fn from_docker_config(path: &Path, registry: &str) -> Result<Credential, ImageError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Credential::Anonymous),
        Err(e) => {
            return Err(ImageError::BadCredentials(format!(
                "read {}: {e}",
                path.display()
            )));
        }
    };
    let config: DockerConfig = serde_json::from_slice(&text)
        .map_err(|e| ImageError::BadCredentials(format!("{}: {e}", path.display())))?;
    let mut keys = vec![
        registry.to_string(),
        format!("https://{registry}"),
        format!("http://{registry}"),
        format!("https://{registry}/v1/"),
        format!("https://{registry}/v2/"),
    ];
    if registry == "docker.io" {
        keys.insert(0, "https://index.docker.io/v1/".into());
        keys.push("index.docker.io".into());
    }
    for key in keys {
        if let Some(a) = config.auths.get(&key) {
            return from_fields(
                &a.username,
                &a.password,
                &a.auth,
                &a.identitytoken,
                &a.registrytoken,
            );
        }
    }
    Ok(Credential::Anonymous)
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    access_token: String,
    #[serde(default)]
    token: String,
}

/// Converts a credential into what oci-client sends. An identity token is exchanged for an
/// access token (`grant_type=refresh_token`) at the realm the registry's challenge names.
pub async fn to_registry_auth(
    cred: &Credential,
    http: &reqwest::Client,
    base_url: &str,
    repository: &str,
) -> Result<RegistryAuth, ImageError> {
    Ok(match cred {
        Credential::Anonymous => RegistryAuth::Anonymous,
        Credential::Basic { username, password } => {
            RegistryAuth::Basic(username.clone(), password.clone())
        }
        Credential::Bearer(t) => RegistryAuth::Bearer(t.clone()),
        Credential::IdentityToken { token, .. } => {
            let unauthorized = |m: String| ImageError::Unauthorized(m);
            let resp = http
                .get(format!("{base_url}/v2/"))
                .send()
                .await
                .map_err(|e| ImageError::Registry(format!("GET {base_url}/v2/: {e}")))?;
            let challenge = resp
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| unauthorized(format!("{base_url} sent no bearer challenge")))?;
            let (realm, service) = parse_bearer_challenge(challenge)
                .ok_or_else(|| unauthorized(format!("unusable challenge {challenge:?}")))?;
            let scope = format!("repository:{repository}:pull");
            let mut form = vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", token.as_str()),
                ("client_id", "cri-server"),
                ("scope", scope.as_str()),
            ];
            if let Some(s) = service.as_deref() {
                form.push(("service", s));
            }
            let resp = http
                .post(&realm)
                .form(&form)
                .send()
                .await
                .map_err(|e| ImageError::Registry(format!("POST {realm}: {e}")))?;
            if !resp.status().is_success() {
                return Err(unauthorized(format!(
                    "token exchange at {realm}: {}",
                    resp.status()
                )));
            }
            let body: TokenResponse = resp
                .json()
                .await
                .map_err(|e| unauthorized(format!("token exchange at {realm}: {e}")))?;
            let t = if body.access_token.is_empty() {
                body.token
            } else {
                body.access_token
            };
            if t.is_empty() {
                return Err(unauthorized(format!(
                    "token exchange at {realm} returned no token"
                )));
            }
            RegistryAuth::Bearer(t)
        }
    })
}

/// Parses `Bearer realm="...",service="..."`.
fn parse_bearer_challenge(h: &str) -> Option<(String, Option<String>)> {
    let rest = h
        .trim()
        .strip_prefix("Bearer ")
        .or_else(|| h.trim().strip_prefix("bearer "))?;
    let (mut realm, mut service) = (None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        let v = v.trim_matches('"').to_string();
        match k.trim() {
            "realm" => realm = Some(v),
            "service" => service = Some(v),
            _ => {}
        }
    }
    Some((realm?, service))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_auth_field_wins_over_username() {
        let a = AuthConfig {
            username: "ignored".into(),
            auth: base64::engine::general_purpose::STANDARD.encode("alice:s3cret"),
            ..Default::default()
        };
        assert_eq!(
            from_cri(&a).unwrap(),
            Credential::Basic {
                username: "alice".into(),
                password: "s3cret".into()
            }
        );
    }

    #[test]
    fn registry_token_is_a_bearer_and_empty_is_anonymous() {
        let a = AuthConfig {
            registry_token: "tok".into(),
            ..Default::default()
        };
        assert_eq!(from_cri(&a).unwrap(), Credential::Bearer("tok".into()));
        assert_eq!(
            from_cri(&AuthConfig::default()).unwrap(),
            Credential::Anonymous
        );
        let a = AuthConfig {
            identity_token: "refresh".into(),
            ..Default::default()
        };
        assert!(matches!(
            from_cri(&a).unwrap(),
            Credential::IdentityToken { .. }
        ));
    }

    #[test]
    fn malformed_auth_is_refused() {
        let a = AuthConfig {
            auth: "!!!".into(),
            ..Default::default()
        };
        assert!(matches!(from_cri(&a), Err(ImageError::BadCredentials(_))));
    }

    #[test]
    fn docker_config_is_looked_up_by_host_forms() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("bob:pw");
        std::fs::write(
            &p,
            format!(r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},"127.0.0.1:5000":{{"username":"u","password":"p"}}}}}}"#),
        )
        .unwrap();
        assert_eq!(
            from_docker_config(&p, "docker.io").unwrap(),
            Credential::Basic {
                username: "bob".into(),
                password: "pw".into()
            }
        );
        assert_eq!(
            from_docker_config(&p, "127.0.0.1:5000").unwrap(),
            Credential::Basic {
                username: "u".into(),
                password: "p".into()
            }
        );
        assert_eq!(
            from_docker_config(&p, "quay.io").unwrap(),
            Credential::Anonymous
        );
        assert_eq!(
            from_docker_config(&dir.path().join("none"), "quay.io").unwrap(),
            Credential::Anonymous
        );
    }

    #[test]
    fn bearer_challenge_is_parsed() {
        let (realm, service) =
            parse_bearer_challenge(r#"Bearer realm="https://auth.example/token",service="reg""#)
                .unwrap();
        assert_eq!(realm, "https://auth.example/token");
        assert_eq!(service.as_deref(), Some("reg"));
        assert!(parse_bearer_challenge("Basic realm=x").is_none());
    }
}
