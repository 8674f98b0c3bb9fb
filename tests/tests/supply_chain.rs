//! What the stack and its tests trust from outside, and how: the Vault host's package key by
//! its fingerprint, the PyPI tools by their files' hashes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

/// The boot script trusts HashiCorp's package key by its published fingerprint, before the
/// repository is added, and points the repository at that file: a key file with another key,
/// or with a second key beside the right one, is refused.
#[test]
fn the_boot_script_trusts_hashicorps_package_key_only_by_its_fingerprint() {
    let script = deployer::resources::vault_server::USER_DATA;
    assert!(script.contains(
        "readonly HASHICORP_KEY_FINGERPRINT=\"798AEC654E5C15428C8E42EEAA16FCBCA621E701\""
    ));
    let at = |s: &str| script.find(s).unwrap_or_else(|| panic!("no {s:?}"));
    let order = [
        "\ntrust_key /run/hashicorp.gpg",
        "\nrpm --import \"${HASHICORP_KEY}\"",
        "\ndnf config-manager --add-repo",
        "s|^gpgkey=.*|gpgkey=file://${HASHICORP_KEY}|",
        "\ndnf install -y -q \"vault-",
    ];
    assert!(order.windows(2).all(|w| at(w[0]) < at(w[1])), "{order:?}");
    let from = at("\ntrust_key() {");
    let function = &script[from..from + script[from..].find("\n}\n").unwrap() + 3];

    // Two keys of a throwaway keyring stand in for HashiCorp's and an impostor's.
    let dir = tempfile::tempdir().unwrap();
    let gpg = |args: &[&str]| {
        let out = std::process::Command::new("gpg")
            .arg("--homedir")
            .arg(dir.path().join("ring"))
            .args(["--batch", "--passphrase", ""])
            .args(args)
            .output()
            .expect("gpg");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    std::fs::create_dir_all(dir.path().join("ring")).unwrap();
    let mut fingerprints = Vec::new();
    for who in ["hashicorp", "impostor"] {
        gpg(&[
            "--quick-gen-key",
            &format!("{who} <{who}@example.com>"),
            "ed25519",
            "sign",
            "never",
        ]);
        let listing = gpg(&["--with-colons", "--list-keys", who]);
        let fpr = listing
            .lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .unwrap()
            .trim_matches(':')
            .to_owned();
        let file = dir.path().join(format!("{who}.asc"));
        std::fs::write(&file, gpg(&["--armor", "--export", who])).unwrap();
        fingerprints.push(fpr);
    }
    let both = dir.path().join("both.asc");
    std::fs::write(
        &both,
        gpg(&["--armor", "--export", "hashicorp", "impostor"]),
    )
    .unwrap();
    // A secret key beside the public one: `--show-keys` lists it as `sec`, not `pub`.
    let with_secret = dir.path().join("with-secret.asc");
    std::fs::write(
        &with_secret,
        gpg(&["--armor", "--export", "hashicorp"])
            + &gpg(&[
                "--pinentry-mode",
                "loopback",
                "--armor",
                "--export-secret-keys",
                "impostor",
            ]),
    )
    .unwrap();
    let trust = |file: &str| {
        let dest = dir.path().join("trusted").join(file);
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "set -euo pipefail\n{function}\ntrust_key \"$1\" \"$2\" \"$3\""
            ))
            .arg("trust")
            .arg(dir.path().join(file))
            .arg(&dest)
            .arg(&fingerprints[0])
            .env("HOME", dir.path())
            .output()
            .unwrap();
        (
            out.status.success(),
            dest.exists(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // What is installed holds the one key, whatever else the file carried.
    let keys_in = |file: &std::path::Path| -> Vec<String> {
        gpg(&["--with-colons", "--show-keys", file.to_str().unwrap()])
            .lines()
            .filter_map(|l| l.strip_prefix("fpr:"))
            .map(|f| f.trim_matches(':').to_owned())
            .collect()
    };
    for accepted in ["hashicorp.asc", "with-secret.asc"] {
        let (ok, installed, err) = trust(accepted);
        assert!(ok && installed, "{accepted}: {err}");
        let dest = dir.path().join("trusted").join(accepted);
        assert_eq!(keys_in(&dest), [fingerprints[0].clone()], "{accepted}");
        let text = std::fs::read_to_string(&dest).unwrap();
        assert!(
            text.contains("BEGIN PGP PUBLIC KEY BLOCK") && !text.contains("PRIVATE"),
            "{accepted}"
        );
    }
    for refused in ["impostor.asc", "both.asc"] {
        let (ok, installed, err) = trust(refused);
        assert!(!ok && !installed, "{refused}: {err}");
        assert!(err.contains("refused"), "{err}");
    }
}

/// Every PyPI distribution the tests install is locked to one version and to its files'
/// SHA-256, dependencies included, and the installer installs nothing else.
#[test]
fn the_test_tools_from_pypi_install_only_with_pinned_hashes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |name: &str| std::fs::read_to_string(root.join(name)).unwrap();
    let mut locked: BTreeMap<String, (String, usize)> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in read("requirements.txt").lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            current = None;
            continue;
        }
        if let Some(hash) = line.strip_prefix("--hash=sha256:") {
            let hash = hash.trim_end_matches(" \\");
            assert!(
                hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
                "{line}"
            );
            let name = current.as_ref().unwrap_or_else(|| panic!("stray {line}"));
            locked.get_mut(name).unwrap().1 += 1;
            continue;
        }
        assert!(!line.starts_with('-'), "an option in the lock: {line}");
        let (name, version) = line
            .trim_end_matches(" \\")
            .split_once("==")
            .unwrap_or_else(|| panic!("not pinned to one version: {line}"));
        assert!(
            !name.contains('['),
            "extras are resolved into the lock: {line}"
        );
        locked.insert(name.to_owned(), (version.to_owned(), 0));
        current = Some(name.to_owned());
    }
    assert!(locked.len() > 10, "{locked:?}");
    for (name, (_, hashes)) in &locked {
        assert!(*hashes > 0, "{name} has no hash");
    }
    for line in read("requirements.in")
        .lines()
        .filter(|l| !l.starts_with('#'))
    {
        let (name, version) = line.split_once("==").unwrap();
        let name = name.split('[').next().unwrap();
        assert_eq!(locked[name].0, version, "{name}");
    }
    let installer = read("python-tools.sh");
    assert!(
        installer.contains(
            "pip_args=(install --quiet --disable-pip-version-check --require-hashes -r \"$python_tools_lock\")"
        ),
        "{installer}"
    );
    let installs: Vec<&str> = installer
        .lines()
        .filter(|l| {
            !l.trim_start().starts_with('#') && l.contains("pip") && !l.contains("pip_args")
        })
        .filter(|l| l.contains("install"))
        .filter(|l| !l.contains("apt-get"))
        .collect();
    assert!(
        installs.is_empty(),
        "pip installs without the lock: {installs:?}"
    );
}

/// The boot script's TLS step, run here on the material the deployer makes: each file gets its
/// part (the certificate followed by its CA, the CA, the key), the key alone is unreadable to
/// the group, and the material file, which holds the key, is gone.
#[test]
fn the_boot_scripts_tls_step_writes_what_the_deployer_stored() {
    use std::os::unix::fs::PermissionsExt as _;
    let script = deployer::resources::vault_server::USER_DATA;
    let step = {
        let from = script.find("\numask 077\n").expect("the TLS step") + 1;
        let end = "chmod 0600 /opt/vault/tls/vault.key\n";
        let to = script[from..].find(end).expect("its end") + from + end.len();
        // All of it but the change of owner (there is no vault user here).
        script[from..to]
            .lines()
            .filter(|l| !l.starts_with("chown vault:vault"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    std::fs::create_dir(&tls).unwrap();
    let material =
        deployer::tls_cert::issue("s", &["127.0.0.1".parse().unwrap()]).expect("material");
    let stored = serde_json::to_string(&material).unwrap();
    // The stand-in `aws` prints the secret's value as `--query SecretString --output text`.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::write(dir.path().join("stored.json"), &stored).unwrap();
    std::fs::write(
        bin.join("aws"),
        format!(
            "#!/usr/bin/env bash\nset -eu\n[ \"$1 $2\" = \"secretsmanager get-secret-value\" ]\ncat {}\n",
            dir.path().join("stored.json").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(bin.join("aws"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let body = step.replace("/opt/vault/tls", &tls.display().to_string());
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -euo pipefail\nREGION=eu-west-1\nTLS_SECRET_ID=s-vault/tls\n{body}\n"
        ))
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |f: &str| std::fs::read_to_string(tls.join(f)).unwrap();
    assert_eq!(
        read("vault.crt"),
        format!("{}{}", material.certificate, material.ca_certificate)
    );
    assert_eq!(read("ca.crt"), material.ca_certificate);
    assert_eq!(read("vault.key"), material.private_key.expose());
    assert!(
        !tls.join("material.json").exists(),
        "the key's copy is gone"
    );
    let mode = std::fs::metadata(tls.join("vault.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}
