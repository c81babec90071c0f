//! A throwaway Postgres server for the Postgres tests: initdb and pg_ctl
//! from the distribution's package (found under /usr/local/bin,
//! /usr/lib/postgresql/*/bin or `$SWARM_PG_BIN`), a cluster in a fresh
//! temporary directory listening on a free loopback port, stopped (and
//! the directory removed) when dropped.
//!
//! initdb refuses root, so as root the server runs as the dedicated user
//! `swarmpg` (`.ci/run` creates it) through `runuser`. Without Postgres,
//! or without that user when root, [`Postgres::start`] prints one line
//! saying how to get it and gives `None` — unless `$CI` is set, where a
//! missing Postgres fails the test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The user a root test process runs the server as.
const USER: &str = "swarmpg";

pub struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    /// `runuser -u swarmpg --` when running as root.
    run_as: Option<&'static str>,
}

/// Where the server binaries are: `$SWARM_PG_BIN`, /usr/local/bin, or the
/// newest /usr/lib/postgresql/N/bin.
fn binaries() -> Option<PathBuf> {
    let has = |d: &Path| d.join("initdb").exists() && d.join("pg_ctl").exists();
    if let Some(d) = std::env::var_os("SWARM_PG_BIN").map(PathBuf::from) {
        return has(&d).then_some(d);
    }
    // /usr/local/bin may hold links to some of them: the directory they
    // link into has the rest (createdb).
    let local = PathBuf::from("/usr/local/bin");
    if has(&local) {
        let real = std::fs::canonicalize(local.join("initdb")).ok();
        return Some(
            real.and_then(|p| p.parent().map(Path::to_path_buf))
                .unwrap_or(local),
        );
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has(d))
        .collect();
    versions.sort();
    versions.pop().map(|(_, d)| d)
}

/// A missing part: a failure on CI, one line and a skip elsewhere.
fn missing(what: &str) -> Option<Postgres> {
    assert!(
        std::env::var_os("CI").is_none(),
        "{what} (CI installs it: .ci/run)"
    );
    eprintln!(
        "skipped: the Postgres tests did not run: {what} (apt-get install postgresql; as root also `useradd --system --create-home swarmpg`, or run .ci/run)"
    );
    None
}

fn uid_of(user: &str) -> Option<(u32, u32)> {
    let name = std::ffi::CString::new(user).ok()?;
    // SAFETY: getpwnam returns null or a pointer to a static record,
    // read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    (!pw.is_null()).then(|| unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Postgres {
    /// Starts a server, or says why not (see the module doc).
    pub fn start(name: &str) -> Option<Postgres> {
        let Some(bin) = binaries() else {
            return missing("PostgreSQL's initdb and pg_ctl are not installed");
        };
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let owner = if root {
            match uid_of(USER) {
                Some(ids) => Some(ids),
                None => return missing("the user `swarmpg` to run Postgres as does not exist"),
            }
        } else {
            None
        };
        let dir = std::env::temp_dir().join(format!("swarm-pg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the server's directory");
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .expect("chown the server's directory");
        }
        let pg = Postgres {
            bin,
            port: free_port(),
            run_as: root.then_some(USER),
            dir,
        };
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data(),
                "-U",
                "swarm",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=400 -c shared_buffers=64MB",
            pg.port,
            pg.dir.display()
        );
        let log = pg.dir.join("server.log").display().to_string();
        pg.run(
            "pg_ctl",
            &[
                "-D",
                &pg.data(),
                "-l",
                &log,
                "-o",
                &opts,
                "-w",
                "-t",
                "120",
                "start",
            ],
        );
        Some(pg)
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// Runs a server binary (as the server's user), failing the test
    /// with its output when it fails.
    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let out = cmd
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", exe.display()));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
        );
    }

    /// Makes database `db` and returns its URL.
    pub fn database(&self, db: &str) -> String {
        let port = self.port.to_string();
        self.run(
            "createdb",
            &["-h", "127.0.0.1", "-p", &port, "-U", "swarm", db],
        );
        self.url(db)
    }

    /// Runs SQL `statement` in database `db` with psql.
    pub fn sql(&self, db: &str, statement: &str) {
        let port = self.port.to_string();
        let args = [
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "swarm",
            "-d",
            db,
            "-v",
            "ON_ERROR_STOP=1",
        ];
        let mut all = args.to_vec();
        all.extend(["-c", statement]);
        self.run("psql", &all);
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://swarm@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data();
        let stop = ["-D", data.as_str(), "-m", "immediate", "-w", "stop"];
        let exe = self.bin.join("pg_ctl");
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let _ = cmd
            .args(stop)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
