//! The worker's integration tests: the whole job path (api, outbox, relay,
//! RabbitMQ, worker, Postgres) with real services, each test with its own
//! database and queue names, and a client ledger that proves no accepted
//! job was lost or done twice.

mod bench;
mod faults;
mod flow;
mod helpers;
mod trace;
