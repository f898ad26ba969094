//! `sql`: a DataFusion SQL shell over a converted dataset.
pub fn run(_args: crate::cli::SqlArgs) -> anyhow::Result<i32> {
    anyhow::bail!("the sql shell is not built yet")
}
