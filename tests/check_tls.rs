//! `portico check` on TLS settings: certificates that cannot be read, keys that do not match,
//! expired and expiring certificates, names no route serves, and origin CA files. Every
//! diagnostic is asserted at its exact `file:line:column`.

mod common;

use common::check::check_files;
use common::tls::{Issued, TestPki};
use rcgen::date_time_ymd;

/// A node file whose TLS listener serves `certs`; the certificate list starts on line 6.
fn node(certs: &[(&str, &str)]) -> String {
    let mut text =
        "name: tls-node\nlisteners:\n  - address: 127.0.0.1:8443\n    tls:\n      certificates:\n"
            .to_string();
    for (cert, key) in certs {
        text.push_str(&format!(
            "        - cert_file: {cert}\n          key_file: {key}\n"
        ));
    }
    text.push_str("rules_dir: rules\naccess_log: off\n");
    text
}

fn paths(issued: &Issued) -> (String, String) {
    (
        issued.cert.display().to_string(),
        issued.key.display().to_string(),
    )
}

/// One route for `www.example.test` (so certificate names can be served or not).
const ROUTES: &str = "\
routes:
  - name: site
    domains: [www.example.test]
    patterns: [\"/*\"]
    origin_group: web
origin_groups:
  - name: web
    origins:
      - address: 127.0.0.1:9
";

#[test]
fn a_good_certificate_for_a_served_name_passes() {
    let pki = TestPki::new();
    let (cert, key) = paths(&pki.issue("www", &["www.example.test"]));
    let out = check_files(&node(&[(&cert, &key)]), &[("routes.yaml", ROUTES)]).accepted();
    assert!(!out.stdout.contains(": warning: "), "{}", out.stdout);
}

#[test]
fn a_key_that_does_not_match_its_certificate() {
    let pki = TestPki::new();
    let (cert, _) = paths(&pki.issue("www", &["www.example.test"]));
    let (_, other_key) = paths(&pki.issue("other", &["www.example.test"]));
    let out = check_files(&node(&[(&cert, &other_key)]), &[("routes.yaml", ROUTES)]).refused();
    out.error(
        "portico.yaml:7:11",
        "listeners[0].tls.certificates[0].key_file",
        "does not match the certificate",
    );
}

#[test]
fn expired_and_soon_expiring_certificates() {
    let pki = TestPki::new();
    let expired = pki.issue_with("old", &["www.example.test"], |p| {
        p.not_before = date_time_ymd(2020, 1, 1);
        p.not_after = date_time_ymd(2021, 1, 1);
    });
    let soon = pki.issue_with("soon", &["www.example.test"], |p| {
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::days(30);
        p.not_after = now + time::Duration::days(5);
    });
    let (old_cert, old_key) = paths(&expired);
    let (soon_cert, soon_key) = paths(&soon);
    let out = check_files(
        &node(&[(&old_cert, &old_key), (&soon_cert, &soon_key)]),
        &[("routes.yaml", ROUTES)],
    )
    .refused();
    out.error(
        "portico.yaml:6:11",
        "listeners[0].tls.certificates[0].cert_file",
        "expired on Fri, 01 Jan 2021",
    );
    out.warning(
        "portico.yaml:8:11",
        "listeners[0].tls.certificates[1].cert_file",
        "day(s)",
    );
}

#[test]
fn unreadable_files_and_names_no_route_serves() {
    let pki = TestPki::new();
    let (cert, key) = paths(&pki.issue("api", &["api.example.test"]));
    let out = check_files(
        &node(&[(&cert, &key), ("missing.pem", &key), (&cert, "missing.key")]),
        &[("routes.yaml", ROUTES)],
    )
    .refused();
    out.warning(
        "portico.yaml:6:11",
        "listeners[0].tls.certificates[0].cert_file",
        "covers \"api.example.test\", which no route serves",
    );
    out.error(
        "portico.yaml:8:11",
        "listeners[0].tls.certificates[1].cert_file",
        "cannot read",
    );
    out.error(
        "portico.yaml:11:11",
        "listeners[0].tls.certificates[2].key_file",
        "cannot read",
    );
}

#[test]
fn an_origin_ca_file_that_cannot_be_read() {
    let pki = TestPki::new();
    let (cert, key) = paths(&pki.issue("www", &["www.example.test"]));
    let routes = format!("{ROUTES}    ca_file: no-such-ca.pem\n");
    let out = check_files(&node(&[(&cert, &key)]), &[("routes.yaml", &routes)]).refused();
    out.error(
        "rules/routes.yaml:10:5",
        "origin_groups[0].ca_file",
        "no-such-ca.pem",
    );
}

#[test]
fn an_origin_ca_file_whose_pem_block_is_not_a_certificate() {
    let pki = TestPki::new();
    let (cert, key) = paths(&pki.issue("www", &["www.example.test"]));
    let routes = format!("{ROUTES}    ca_file: not-a-cert.pem\n");
    let pem = "-----BEGIN CERTIFICATE-----\nAAAAAAAA\n-----END CERTIFICATE-----\n";
    let out = check_files(
        &node(&[(&cert, &key)]),
        &[("routes.yaml", &routes), ("not-a-cert.pem", pem)],
    )
    .refused();
    out.error(
        "rules/routes.yaml:10:5",
        "origin_groups[0].ca_file",
        "is not a certificate Portico can read",
    );
}

#[test]
fn ticket_key_files_that_cannot_be_used() {
    let pki = TestPki::new();
    let (cert, key) = paths(&pki.issue("www", &["www.example.test"]));
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.display().to_string()
    };
    let good = file("good.key", &[9; 80]);
    let short = file("short.key", &[7; 32]);
    let missing = dir.path().join("missing.key").display().to_string();
    let mut same_name = [1; 48];
    same_name[..16].copy_from_slice(&[9; 16]);
    let same = file("same.key", &same_name);
    // The node file's nine lines, then the list from line 11.
    let text = format!(
        "{}tls_ticket_keys:\n  - {good}\n  - {short}\n  - {missing}\n  - {same}\n",
        node(&[(&cert, &key)])
    );
    let out = check_files(&text, &[("routes.yaml", ROUTES)]).refused();
    out.error(
        "portico.yaml:12:5",
        "tls_ticket_keys[1]",
        "holds 32 bytes; a ticket key file holds 48 or 80 random bytes",
    );
    out.error("portico.yaml:13:5", "tls_ticket_keys[2]", "cannot read");
    out.error(
        "portico.yaml:14:5",
        "tls_ticket_keys[3]",
        "names the same key as tls_ticket_keys[0]",
    );
    assert_eq!(out.error_count(), 3, "{}", out.stdout);
}

#[test]
fn ticket_keys_without_a_tls_listener_are_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("ticket.key");
    std::fs::write(&key, [5; 80]).unwrap();
    let text = format!(
        "name: plain-node\nlisteners:\n  - address: 127.0.0.1:8080\nrules_dir: rules\naccess_log: off\ntls_ticket_keys: [{}]\n",
        key.display()
    );
    let out = check_files(&text, &[("routes.yaml", ROUTES)]).accepted();
    out.warning("portico.yaml:6:1", "tls_ticket_keys", "no listener has tls");
}
