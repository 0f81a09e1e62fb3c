//! Drops the test databases (with their replication slots) and vhosts that interrupted test runs
//! left behind. `make test` runs it first.

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let databases = test_support::drop_leftover_test_databases().await?;
    let vhosts = test_support::delete_leftover_test_vhosts().await?;
    if databases + vhosts > 0 {
        eprintln!("removed {databases} leftover test databases and {vhosts} test vhosts");
    }
    Ok(())
}
