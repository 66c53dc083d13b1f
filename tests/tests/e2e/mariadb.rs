//! The test MariaDB itself: a fresh database can be created, written, read
//! and dropped (so a failure elsewhere is not the harness's fault).

use kubesink_tests::mariadb::fresh_database;
use sqlx::Row;

#[tokio::test]
async fn mariadb_fresh_database_is_usable() -> anyhow::Result<()> {
    let db = fresh_database("harness").await?;
    assert!(
        db.url().ends_with(&format!("/{}", db.name())),
        "{}",
        db.url()
    );

    let pool = db.connect().await?;
    sqlx::query("CREATE TABLE probe (id INT PRIMARY KEY, note VARCHAR(64) NOT NULL)")
        .execute(&pool)
        .await?;
    sqlx::query("INSERT INTO probe (id, note) VALUES (?, ?)")
        .bind(7)
        .bind("héllo")
        .execute(&pool)
        .await?;
    let row = sqlx::query("SELECT id, note, DATABASE() AS db FROM probe")
        .fetch_one(&pool)
        .await?;
    assert_eq!(row.try_get::<i32, _>("id")?, 7);
    assert_eq!(row.try_get::<String, _>("note")?, "héllo");
    assert_eq!(row.try_get::<String, _>("db")?, db.name());
    pool.close().await;

    // A second database is distinct and does not see the first one's table.
    let other = fresh_database("harness").await?;
    assert_ne!(other.name(), db.name());
    let other_pool = other.connect().await?;
    let tables: Vec<String> = sqlx::query_scalar("SHOW TABLES")
        .fetch_all(&other_pool)
        .await?;
    assert!(tables.is_empty(), "fresh database has tables: {tables:?}");
    other_pool.close().await;

    let name = db.name().to_owned();
    let server = sqlx::MySqlPool::connect(db.server_url()).await?;
    db.drop_database().await?;
    other.drop_database().await?;
    let left: Vec<String> = sqlx::query_scalar(
        "SELECT schema_name FROM information_schema.schemata WHERE schema_name = ?",
    )
    .bind(&name)
    .fetch_all(&server)
    .await?;
    assert!(left.is_empty(), "database {name} still exists after drop");
    server.close().await;
    Ok(())
}
