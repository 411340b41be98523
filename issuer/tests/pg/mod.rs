//! A private PostgreSQL server for one test: initdb and pg_ctl from Debian's packages, on a
//! free loopback port with its socket in its own directory, stopped when dropped. As root
//! the server runs as the `postgres` user (initdb refuses root).

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::Command;

/// A running server and the URL of its `postgres` database.
pub struct Postgres {
    _dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
    pub url: String,
}

fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

impl Postgres {
    /// Starts a server, or `None` (a loud skip; a failure when `CI=true`) without PostgreSQL.
    pub fn start() -> Option<Self> {
        let Some(bin) = bin_dir() else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "PostgreSQL (initdb) is not installed"
            );
            eprintln!("SKIPPED: PostgreSQL is not installed (deploy/dev/test.sh installs it)");
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let as_postgres = is_root();
        if as_postgres {
            let ids = |flag: &str| -> u32 {
                let out = Command::new("id")
                    .args([flag, "postgres"])
                    .output()
                    .expect("id");
                String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse()
                    .expect("postgres user")
            };
            std::os::unix::fs::chown(dir.path(), Some(ids("-u")), Some(ids("-g"))).expect("chown");
        }
        let data = dir.path().join("pgdata");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("port")
            .local_addr()
            .expect("addr")
            .port();
        let pg = Self {
            data: data.clone(),
            bin,
            as_postgres,
            url: format!("postgres://tessera@127.0.0.1:{port}/postgres"),
            _dir: dir,
        };
        let socket_dir = pg
            .data
            .parent()
            .expect("parent")
            .to_string_lossy()
            .into_owned();
        pg.run(
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "-U",
                "tessera",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        pg.run(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-l",
                &format!("{socket_dir}/postgres.log"),
                "-w",
                "-o",
                &format!("-p {port} -k {socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off"),
                "start",
            ],
        );
        Some(pg)
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self.command(program).args(args).output().expect(program);
        assert!(
            out.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args([
                "-D",
                &self.data.to_string_lossy(),
                "-m",
                "immediate",
                "stop",
            ])
            .output();
    }
}
