//! The admin listener's bearer token, end to end: a real client against an edge whose
//! admin endpoints were given `admin.token_file`.

mod common;

use common::edge::{client, group_yaml, TestEdge};
use common::origin::TestOrigin;

const TOKEN: &str = "s3cret-admin-token-0123";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_only_healthz_answers_without_it() {
    let origin = TestOrigin::ok(&[]).await;
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let node = format!(
        "admin:\n  address: 0.0.0.0:1\n  token_file: {}\n",
        token_file.display()
    );
    let rules = format!(
        "routes:\n  - name: site\n    patterns: [\"/*\"]\n    origin_group: web\norigin_groups:\n{}",
        group_yaml("web", origin.addr())
    );
    let edge = TestEdge::with_routes(&node, &rules).await;

    let healthz = client()
        .get(edge.admin_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200);

    let bare = client()
        .get(edge.admin_url("/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 401);
    assert_eq!(bare.headers()["www-authenticate"], "Bearer");
    assert!(bare.text().await.unwrap().contains("Authorization: Bearer"));

    for wrong in ["Bearer nope", "Bearer s3cret-admin-token-0124", TOKEN] {
        let refused = client()
            .get(edge.admin_url("/status"))
            .header("authorization", wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401, "{wrong}");
    }
    let purge = client()
        .post(edge.admin_url("/purge"))
        .body(r#"{"paths": ["/*"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(purge.status(), 401, "a purge without the token");

    let status = client()
        .get(edge.admin_url("/status"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 200);
    let body: serde_json::Value = serde_json::from_str(&status.text().await.unwrap()).unwrap();
    assert_eq!(body["node"], "test-edge");
}
