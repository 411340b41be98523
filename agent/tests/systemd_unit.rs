//! The agent's systemd unit is one systemd accepts, pointing at the agent as built.

#[test]
fn systemd_accepts_the_unit() {
    let analyze = std::path::Path::new("/usr/bin/systemd-analyze");
    if !analyze.exists() {
        let msg = "missing test peer: systemd-analyze (package systemd)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("SKIPPED: {msg}");
        return;
    }
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/systemd/tessera-agent.service"
    ))
    .expect("the unit file");
    assert!(unit.contains("ExecStart=/usr/local/bin/tessera-agent serve"));
    assert!(unit.contains("Restart=always"));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tessera-agent.service");
    let built = unit.replace(
        "/usr/local/bin/tessera-agent",
        env!("CARGO_BIN_EXE_tessera-agent"),
    );
    std::fs::write(&path, built).expect("unit copy");
    let out = std::process::Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.trim().is_empty(), "{text}");
}
