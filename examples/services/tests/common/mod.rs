//! What the services' tests share: a stack started by `stack.sh` in a temporary folder (stopped
//! when dropped), the shared data folder, and a small HTTP client.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The servers (and, unless `--servers-only`, the services) of one test.
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub env: HashMap<String, String>,
}

pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("stack.sh")
}

pub fn shared() -> PathBuf {
    std::env::var_os("UNIFACE_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
}

impl Stack {
    /// `stack.sh up DIR ARGS...`, with `vars` in its environment.
    pub fn up(args: &[&str], vars: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // the servers run as their own users when the tests run as root: let them in
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mut stack = Self {
            dir,
            env: HashMap::new(),
        };
        stack.run("up", args, vars);
        stack.env = stack.read_env();
        stack
    }

    fn read_env(&self) -> HashMap<String, String> {
        std::fs::read_to_string(self.dir.path().join("env"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// Run a `stack.sh` command on this stack's folder; panics with its output on failure.
    pub fn run(&self, command: &str, args: &[&str], vars: &[(&str, &str)]) {
        let mut c = Command::new("bash");
        c.arg(script()).arg(command).arg(self.dir.path()).args(args);
        for (k, v) in vars {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "stack.sh {command} failed (PostgreSQL and RabbitMQ are needed: Debian packages postgresql, rabbitmq-server):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn pg_url(&self) -> &str {
        &self.env["UNIFACE_PG_URL"]
    }

    pub fn url(&self) -> &str {
        &self.env["UNIFACE_URL"]
    }

    pub fn admin(&self) -> &str {
        &self.env["UNIFACE_ADMIN_KEY"]
    }

    /// The end of a service's log (for failure messages).
    pub fn log(&self, name: &str) -> String {
        let bytes = std::fs::read(self.dir.path().join("logs").join(format!("{name}.log")))
            .unwrap_or_default();
        String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(4000)..]).into_owned()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("down")
            .arg(self.dir.path())
            .output();
    }
}

/// An answer: status, JSON body (Null when none), headers.
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
    pub headers: HashMap<String, String>,
}

/// A blocking HTTP client that returns every status as an [`Answer`].
pub struct Client {
    agent: ureq::Agent,
    pub base: String,
}

impl Client {
    pub fn new(base: &str) -> Self {
        Self::with_config(base, ureq::Agent::config_builder())
    }

    pub fn with_config(
        base: &str,
        config: ureq::config::ConfigBuilder<ureq::typestate::AgentScope>,
    ) -> Self {
        Self {
            agent: config.http_status_as_error(false).build().into(),
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    /// `method path` with an optional bearer token and body (content type, bytes).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, &[u8])>,
    ) -> Result<Answer, ureq::Error> {
        self.call_with(method, path, token, body, &[])
    }

    /// [`Client::call`] with more headers.
    pub fn call_with(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, &[u8])>,
        headers: &[(&str, &str)],
    ) -> Result<Answer, ureq::Error> {
        let uri = format!("{}{path}", self.base);
        let mut b = ureq::http::Request::builder().method(method).uri(&uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        if let Some(t) = token {
            b = b.header("Authorization", format!("Bearer {t}"));
        }
        let (ct, bytes) = body.unwrap_or(("application/octet-stream", &[]));
        if body.is_some() {
            b = b.header("Content-Type", ct);
        }
        let request = b.body(bytes.to_vec()).unwrap();
        let mut r = self.agent.run(request)?;
        let headers = r
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string()?;
        let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        Ok(Answer {
            status,
            body,
            headers,
        })
    }

    pub fn get(&self, path: &str, token: &str) -> Answer {
        self.call("GET", path, Some(token), None).unwrap()
    }

    pub fn post_json(&self, path: &str, token: &str, body: &serde_json::Value) -> Answer {
        let b = serde_json::to_vec(body).unwrap();
        self.call("POST", path, Some(token), Some(("application/json", &b)))
            .unwrap()
    }

    pub fn post_image(&self, path: &str, token: &str, image: &Path) -> Answer {
        let b = std::fs::read(image).unwrap();
        self.call("POST", path, Some(token), Some(("image/jpeg", &b)))
            .unwrap()
    }
}

/// The environment the end-to-end tests start their stack with: this build's binary, an image
/// store and an HS256 JWT secret file (issuer `uniface-test`).
pub fn service_vars<'a>(images: &'a Path, jwt_secret: &'a Path) -> Vec<(&'a str, &'a str)> {
    vec![
        (
            "UNIFACE_SERVICES_BIN",
            env!("CARGO_BIN_EXE_uniface-services"),
        ),
        ("UNIFACE_IMAGES_DIR", images.to_str().unwrap()),
        (
            "UNIFACE_JWT_HS256_SECRET_FILE",
            jwt_secret.to_str().unwrap(),
        ),
        ("UNIFACE_JWT_ISSUER", "uniface-test"),
    ]
}

/// Wait until `check` holds, polling for up to `seconds`.
pub fn eventually(seconds: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while std::time::Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("{what}: not within {seconds} s");
}
