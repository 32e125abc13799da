//! The items resource over HTTP, in both versions.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{assert_problem, header, spawn_app};

#[tokio::test]
async fn create_answers_201_with_location_etag_and_the_item() {
    let app = spawn_app().await;
    let response = app
        .items("v1")
        .create(&json!({"name": "Desk lamp", "description": "Warm light", "price_cents": 1999, "currency": "EUR"}))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = header(response.headers(), "location").expect("Location").to_owned();
    assert_eq!(header(response.headers(), "etag"), Some("\"1\""));
    let item: Value = response.json().await.expect("json");
    assert_eq!(location, format!("/v1/items/{}", item["id"].as_str().expect("id")));
    assert_eq!(item["name"], "Desk lamp");
    assert_eq!(item["price_cents"], 1999);
    assert_eq!(item["version"], 1);

    let fetched = app.send(reqwest::Method::GET, &location, &[], None).await;
    assert_eq!(fetched.status(), StatusCode::OK);
    assert_eq!(fetched.json::<Value>().await.expect("json"), item);
}

#[tokio::test]
async fn get_sends_an_etag_and_answers_if_none_match_with_304() {
    let app = spawn_app().await;
    let id = app.items("v1").create_ok("Lamp").await["id"].as_str().expect("id").to_owned();

    let response = app.items("v1").get(&id, &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let etag = header(response.headers(), "etag").expect("ETag").to_owned();

    let not_modified = app.items("v1").get(&id, &[("if-none-match", &etag)]).await;
    assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(not_modified.headers(), "etag"), Some(etag.as_str()), "a 304 keeps the validator");
    assert!(not_modified.bytes().await.expect("body").is_empty());

    let changed = app.items("v1").get(&id, &[("if-none-match", "\"41\"")]).await;
    assert_eq!(changed.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_unknown_item_is_a_404_problem_and_a_bad_id_a_400() {
    let app = spawn_app().await;
    let missing = app.items("v1").get("0190b1d4-0000-7000-8000-000000000000", &[]).await;
    assert_problem(missing, StatusCode::NOT_FOUND, "not_found").await;
    let malformed = app.items("v1").get("not-a-uuid", &[]).await;
    assert_problem(malformed, StatusCode::BAD_REQUEST, "invalid_path").await;
}

#[tokio::test]
async fn list_pages_with_an_opaque_cursor_and_a_next_link() {
    let app = spawn_app().await;
    let mut created = Vec::new();
    for n in 0..5 {
        created.push(app.items("v1").create_ok(&format!("item {n}")).await["id"].clone());
    }

    let mut seen = Vec::new();
    let mut query = "limit=2".to_owned();
    let mut pages = 0;
    loop {
        let response = app.items("v1").list(&query).await;
        assert_eq!(response.status(), StatusCode::OK);
        let link = header(response.headers(), "link").map(str::to_owned);
        let page: Value = response.json().await.expect("json");
        seen.extend(page["items"].as_array().expect("items").iter().map(|i| i["id"].clone()));
        pages += 1;
        let Some(cursor) = page["next_cursor"].as_str() else {
            assert!(link.is_none(), "no Link on the last page");
            break;
        };
        let link = link.expect("a Link header when there is a next page");
        assert_eq!(link, format!("</v1/items?limit=2&cursor={cursor}>; rel=\"next\""));
        query = format!("limit=2&cursor={cursor}");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created, "every item once, in creation order");
}

#[tokio::test]
async fn list_refuses_bad_limits_and_cursors() {
    let app = spawn_app().await;
    for query in ["limit=0", "limit=101", "limit=ten", "cursor=garbage"] {
        assert_problem(app.items("v1").list(query).await, StatusCode::BAD_REQUEST, "invalid_query").await;
    }
}

#[tokio::test]
async fn update_needs_the_current_etag() {
    let app = spawn_app().await;
    let items = app.items("v1");
    let id = items.create_ok("Lamp").await["id"].as_str().expect("id").to_owned();
    let change = json!({"name": "Floor lamp", "price_cents": 4999, "currency": "EUR"});

    let without = items.update(&id, None, &change).await;
    assert_problem(without, StatusCode::PRECONDITION_REQUIRED, "precondition_required").await;

    let updated = items.update(&id, Some("\"1\""), &change).await;
    assert_eq!(updated.status(), StatusCode::OK);
    assert_eq!(header(updated.headers(), "etag"), Some("\"2\""));
    let body: Value = updated.json().await.expect("json");
    assert_eq!((body["name"].as_str(), body["version"].as_i64()), (Some("Floor lamp"), Some(2)));

    // A client still holding version 1 loses the race instead of overwriting.
    let stale = items.update(&id, Some("\"1\""), &change).await;
    assert_problem(stale, StatusCode::PRECONDITION_FAILED, "precondition_failed").await;
    let weak = items.update(&id, Some("W/\"2\""), &change).await;
    assert_problem(weak, StatusCode::PRECONDITION_FAILED, "precondition_failed").await;

    let any = items.update(&id, Some("*"), &change).await;
    assert_eq!(header(any.headers(), "etag"), Some("\"3\""));

    let missing = items.update("0190b1d4-0000-7000-8000-000000000000", Some("\"1\""), &change).await;
    assert_problem(missing, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn delete_honours_if_match_and_then_the_item_is_gone() {
    let app = spawn_app().await;
    let items = app.items("v1");
    let id = items.create_ok("Lamp").await["id"].as_str().expect("id").to_owned();

    let stale = items.delete(&id, Some("\"7\"")).await;
    assert_problem(stale, StatusCode::PRECONDITION_FAILED, "precondition_failed").await;

    let deleted = items.delete(&id, Some("\"1\"")).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_problem(items.get(&id, &[]).await, StatusCode::NOT_FOUND, "not_found").await;
    assert_problem(items.delete(&id, None).await, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn validation_reports_every_field_at_its_own_pointer_in_each_version() {
    let app = spawn_app().await;
    let v1 = app
        .items("v1")
        .create(&json!({"name": " ", "description": "x".repeat(2001), "price_cents": -5, "currency": "euro"}))
        .await;
    let body = assert_problem(v1, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let pointers: Vec<&str> =
        body["errors"].as_array().expect("errors").iter().filter_map(|e| e["pointer"].as_str()).collect();
    assert_eq!(pointers, ["/name", "/description", "/price_cents", "/currency"]);
    assert_eq!(body["errors"][0]["code"], "required");

    let v2 =
        app.items("v2").create(&json!({"name": "ok", "price": {"amount_minor": -1, "currency": "EU"}})).await;
    let body = assert_problem(v2, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let pointers: Vec<&str> =
        body["errors"].as_array().expect("errors").iter().filter_map(|e| e["pointer"].as_str()).collect();
    assert_eq!(pointers, ["/price/amount_minor", "/price/currency"]);

    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM items").fetch_one(&app.direct).await.expect("count");
    assert_eq!(count, 0, "nothing invalid was stored");
}

#[tokio::test]
async fn a_body_of_the_wrong_shape_is_a_422_naming_the_problem() {
    let app = spawn_app().await;
    let missing = app.items("v1").create(&json!({"name": "Lamp", "currency": "EUR"})).await;
    let body = assert_problem(missing, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(body["detail"].as_str().expect("detail").contains("price_cents"), "{body}");

    // v1 field names are not v2's: an unknown field is refused, not ignored.
    let wrong_version = app
        .items("v1")
        .create(&json!({"name": "Lamp", "price": {"amount_minor": 1, "currency": "EUR"}}))
        .await;
    assert_problem(wrong_version, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
}

#[tokio::test]
async fn v2_changes_only_the_price_representation_of_the_same_items() {
    let app = spawn_app().await;
    let created = app.items("v2").create_ok("Lamp").await;
    assert_eq!(created["price"], json!({"amount_minor": 1999, "currency": "EUR"}));
    assert!(created.get("price_cents").is_none());
    let id = created["id"].as_str().expect("id");

    let v1: Value = app.items("v1").get(id, &[]).await.json().await.expect("json");
    assert_eq!((v1["price_cents"].as_i64(), v1["currency"].as_str()), (Some(1999), Some("EUR")));
    for field in ["id", "name", "description", "version", "created_at", "updated_at"] {
        assert_eq!(v1[field], created[field], "{field} is shared");
    }

    let updated = app
        .items("v2")
        .update(
            id,
            Some("\"1\""),
            &json!({"name": "Lamp", "price": {"amount_minor": 2500, "currency": "USD"}}),
        )
        .await;
    assert_eq!(updated.status(), StatusCode::OK);
    let v1: Value = app.items("v1").get(id, &[]).await.json().await.expect("json");
    assert_eq!((v1["price_cents"].as_i64(), v1["currency"].as_str()), (Some(2500), Some("USD")));
    let page: Value = app.items("v2").list("").await.json().await.expect("json");
    assert_eq!(page["items"][0]["price"]["amount_minor"], 2500);
}
