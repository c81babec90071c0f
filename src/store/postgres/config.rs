//! A `postgres://` URL made into a connection pool, as libpq would read
//! it: the password from the URL, else `$PGPASSWORD`, else `~/.pgpass`
//! (or `$PGPASSFILE`); TLS through rustls when the URL asks for it
//! (`sslmode=require`), otherwise none.
//!
//! Messages name the database by its URL without the password
//! ([`redacted`]), so a password never reaches a log or an error.

use super::super::StoreError;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::path::PathBuf;
use tokio_postgres::config::{Host, SslMode};

/// How many connections one store keeps: the writer's, a claimant's,
/// readers'. Small: several nodes share one server.
const POOL: usize = 8;

/// The database as messages name it: `postgres://user@host:port/db`.
pub fn redacted(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "?".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        config.get_user().unwrap_or("?"),
        config.get_dbname().unwrap_or("?")
    )
}

/// `url` read into a driver config, with the defaults libpq would use.
pub fn parse(url: &str) -> Result<tokio_postgres::Config, StoreError> {
    let mut config: tokio_postgres::Config =
        url.parse()
            .map_err(|e: tokio_postgres::Error| StoreError::Unsupported {
                url: strip_password(url),
                message: format!("not a Postgres URL ({e})"),
            })?;
    if config.get_hosts().is_empty() {
        let socket = PathBuf::from("/var/run/postgresql");
        if socket.is_dir() {
            config.host_path(socket);
        } else {
            config.host("localhost");
        }
    }
    if config.get_user().is_none() {
        let user = std::env::var("PGUSER")
            .or_else(|_| std::env::var("USER"))
            .unwrap_or_else(|_| "postgres".into());
        config.user(&user);
    }
    if config.get_dbname().is_none() {
        let user = config.get_user().unwrap_or("postgres").to_string();
        config.dbname(&user);
    }
    if config.get_password().is_none()
        && let Some(p) = std::env::var("PGPASSWORD")
            .ok()
            .filter(|p| !p.is_empty())
            .or_else(|| pgpass(&config))
    {
        config.password(p);
    }
    config.application_name("swarm");
    Ok(config)
}

/// `url` with any password in it replaced (for a URL that did not parse).
fn strip_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let user = &url[s + 3..at];
            let user = user.split(':').next().unwrap_or("");
            format!("{}{user}{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// The password `~/.pgpass` (or `$PGPASSFILE`) gives for this host, port,
/// database and user: the first line whose fields match (`*` matches
/// anything), as libpq reads it. A file others can read is ignored, as
/// libpq ignores it.
fn pgpass(config: &tokio_postgres::Config) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass")))?;
    let meta = std::fs::metadata(&path).ok()?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "ignoring a password file others can read");
        return None;
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        _ => "localhost".into(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let want = [
        host.as_str(),
        port.as_str(),
        config.get_dbname().unwrap_or(""),
        config.get_user().unwrap_or(""),
    ];
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(fields)
        .find(|f| f.len() == 5 && (0..4).all(|i| f[i] == "*" || f[i] == want[i]))
        .map(|f| f[4].clone())
}

/// A `.pgpass` line's fields: split on `:`, `\` escaping `:` and `\`.
fn fields(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut esc) = (Vec::new(), String::new(), false);
    for c in line.chars() {
        match (esc, c) {
            (true, c) => {
                cur.push(c);
                esc = false;
            }
            (false, '\\') => esc = true,
            (false, ':') => out.push(std::mem::take(&mut cur)),
            (false, c) => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// A pool of connections to the database `config` names.
pub fn pool(config: tokio_postgres::Config) -> Result<Pool, StoreError> {
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match config.get_ssl_mode() {
        SslMode::Require => Manager::from_config(config.clone(), tls(), manager_config),
        _ => Manager::from_config(config.clone(), tokio_postgres::NoTls, manager_config),
    };
    Pool::builder(manager)
        .max_size(POOL)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Open {
            path: redacted(&config),
            message: e.to_string(),
        })
}

/// rustls over the web's root certificates.
pub fn tls() -> tokio_postgres_rustls::MakeRustlsConnect {
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_a_message() {
        let c = parse("postgres://ann:s3cret@db.example:6543/swarm").unwrap();
        assert_eq!(redacted(&c), "postgres://ann@db.example:6543/swarm");
        assert_eq!(
            strip_password("postgres://ann:s3cret@h/db?x"),
            "postgres://ann@h/db?x"
        );
        assert_eq!(
            fields(r"h:5432:d\:b:u:p\\w"),
            ["h", "5432", "d:b", "u", r"p\w"]
        );
    }
}
