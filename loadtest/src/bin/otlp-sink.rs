//! An OTLP trace receiver that accepts and counts, for `cargo xtask bench`
//! (the instance that exports every span): the api exports to it as it would to a collector.
//! Prints its gRPC endpoint, then serves until killed.

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let receiver = testkit::otlp::Receiver::start_counting().await?;
    println!("{}", receiver.grpc_endpoint());
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        eprintln!("otlp-sink: {} spans in {} exports", receiver.counted(), receiver.requests());
    }
}
