//! Cluster lifecycle tests with the real server binaries.

use madbase_pg::{Cluster, ClusterOptions, ClusterStatus, Connection, PgBinaries};

#[test]
fn finds_binaries() {
    let b = PgBinaries::find().unwrap();
    assert!(b.initdb().is_file());
    assert!(b.version().unwrap().contains("PostgreSQL"));
}

#[monoio::test(timer_enabled = true)]
async fn reuses_initialised_data_dir_and_reports_crash() {
    let dir = tempfile::tempdir().unwrap();
    let port1 = free_port();
    let (password, pgdata_id) = {
        let c =
            Cluster::open_or_init(dir.path(), port1, ClusterOptions { durable: false, ..Default::default() }).unwrap();
        let conn = Connection::connect(&c.connect_config()).await.unwrap();
        let r = conn
            .simple_query(
                "create table marker(x int); insert into marker values (7); show wal_level; show max_connections",
            )
            .await
            .unwrap();
        assert_eq!(r[2].rows[0].get_str(0), Some("logical"));
        assert!(r[3].rows[0].get_str(0).unwrap().parse::<u32>().unwrap() >= 200);
        let mode = std::fs::metadata(c.data_dir().join("superuser.password")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);
        (c.password().to_string(), std::fs::read_to_string(c.pgdata().join("PG_VERSION")).unwrap())
        // dropped: stopped
    };
    let port2 = free_port();
    let mut c =
        Cluster::open_or_init(dir.path(), port2, ClusterOptions { durable: false, ..Default::default() }).unwrap();
    assert_eq!(c.password(), password, "password reused");
    assert_eq!(std::fs::read_to_string(c.pgdata().join("PG_VERSION")).unwrap(), pgdata_id);
    assert!(c.connection_url().contains(&format!(":{port2}/")));
    let conn = Connection::connect(&c.connect_config()).await.unwrap();
    let r = conn.simple_query("select x from marker").await.unwrap();
    assert_eq!(r[0].rows[0].get_str(0), Some("7"), "data survived; new port in use");
    drop(conn);

    // A crash is reported, not hidden.
    assert_eq!(c.status(), ClusterStatus::Running);
    let pid = c.pid().unwrap();
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    let mut crashed = false;
    for _ in 0..500 {
        if let ClusterStatus::Exited(_) = c.status() {
            crashed = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(crashed);
    // And it can be started again explicitly.
    c.start().unwrap();
    assert_eq!(c.status(), ClusterStatus::Running);
    c.stop().unwrap();
    assert_eq!(c.status(), ClusterStatus::Stopped);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port()
}
