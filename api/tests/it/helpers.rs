//! The api's test helpers: the test app and its typed client live in
//! `testkit::app` (the worker's tests start the api the same way); what only
//! these tests need is here.

pub(crate) use testkit::app::*;
pub(crate) use testkit::probe::sample;

/// Holds a row lock on an item so that writes to it block, until dropped
/// (the transaction rolls back).
pub(crate) async fn lock_item(app: &TestApp, id: &str) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = app.direct.begin().await.expect("a transaction");
    sqlx::query("SELECT 1 FROM items WHERE id = $1::uuid FOR UPDATE")
        .bind(id)
        .execute(&mut *tx)
        .await
        .expect("locking the item");
    tx
}

/// Waits until some backend of the app's database is blocked on a lock.
pub(crate) async fn wait_for_lock_waiter(app: &TestApp) {
    app.wait_until("a request waits on the row lock", || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&app.direct)
        .await
        .expect("pg_stat_activity");
        waiting > 0
    })
    .await;
}
