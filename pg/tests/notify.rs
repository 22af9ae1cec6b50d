//! `LISTEN`/`NOTIFY` on a pipelined connection, against a real PostgreSQL (no mocks).

use std::time::Duration;

use madbase_pg::{Batch, Cluster, ConnectConfig, Connection};

#[monoio::test(timer_enabled = true)]
async fn notifications_queue_overflow_and_close() {
    let cluster = Cluster::ephemeral().unwrap();
    let cfg = ConnectConfig::from_url(&cluster.connection_url()).unwrap();
    let listener = Connection::connect(&cfg).await.unwrap();
    let sender = Connection::connect(&cfg).await.unwrap();
    listener.simple_query("LISTEN pgrst").await.unwrap();

    sender.simple_query("NOTIFY pgrst, 'reload schema'; NOTIFY other, 'x'").await.unwrap();
    sender.simple_query("NOTIFY pgrst").await.unwrap();
    let first = monoio::time::timeout(Duration::from_secs(10), listener.notification()).await.unwrap().unwrap();
    assert_eq!((first.channel.as_str(), first.payload.as_str()), ("pgrst", "reload schema"));
    assert_eq!(first.process_id, sender.backend_key().0);
    let second = monoio::time::timeout(Duration::from_secs(10), listener.notification()).await.unwrap().unwrap();
    assert_eq!((second.channel.as_str(), second.payload.as_str()), ("pgrst", ""), "not listening on 'other'");
    assert!(!listener.take_notifications_lost());

    // Notifications interleave with the pipeline: batches and queries still complete normally.
    sender.simple_query("NOTIFY pgrst, 'a'").await.unwrap();
    let r = listener.execute(Batch::new().query("select 7")).await.unwrap();
    assert_eq!(r[0].scalar(), Some("7"));

    // Overflow keeps the newest and says that some were lost (one transaction, distinct payloads:
    // three notifications).
    listener.set_notification_capacity(2);
    sender.simple_query("NOTIFY pgrst, 'b'; NOTIFY pgrst, 'c'; NOTIFY pgrst, 'd'").await.unwrap();
    // A round trip on the listener after the sender's commit: the notifications arrived before it.
    listener.simple_query("select 1").await.unwrap();
    assert!(listener.take_notifications_lost());
    let kept: Vec<String> = std::iter::from_fn(|| listener.try_notification()).map(|n| n.payload).collect();
    assert_eq!(kept, ["c", "d"]);

    // The owner waiting for a notification learns that the connection is gone.
    let pid = listener.backend_key().0;
    sender.simple_query(&format!("select pg_terminate_backend({pid})")).await.unwrap();
    let end = monoio::time::timeout(Duration::from_secs(10), listener.notification()).await.unwrap();
    assert_eq!(end, None);
    assert!(listener.is_closed());
}
