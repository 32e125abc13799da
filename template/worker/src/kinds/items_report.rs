//! `items_report`: price statistics over the items, per currency.

use jobs::kinds::ItemsReport;
use jobs::kinds::items_report::Input;
use serde_json::{Value, json};

use super::{Context, Job, JobError};

impl Job for ItemsReport {
    async fn run(input: Input, ctx: &mut Context<'_>) -> Result<Value, JobError> {
        let rows: Vec<(String, i64, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT currency, count(*), sum(price_amount_minor)::bigint, min(price_amount_minor),
                    max(price_amount_minor), round(avg(price_amount_minor))::bigint
             FROM items
             WHERE $1::text IS NULL OR currency = $1
             GROUP BY currency
             ORDER BY currency",
        )
        .bind(input.currency.as_deref())
        .fetch_all(&mut *ctx.tx)
        .await?;
        let items: i64 = rows.iter().map(|r| r.1).sum();
        let currencies: Vec<Value> = rows
            .into_iter()
            .map(|(currency, count, total, min, max, average)| {
                json!({
                    "currency": currency,
                    "items": count,
                    "total_minor": total,
                    "min_minor": min,
                    "max_minor": max,
                    "average_minor": average,
                })
            })
            .collect();
        Ok(json!({ "items": items, "currencies": currencies }))
    }
}
