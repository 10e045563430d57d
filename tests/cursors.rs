//! Consumer cursors: names and bounds, durability across crashes and power losses, a failed
//! fsync, and a corrupt CURSORS file that is reported rather than silently forgotten.

mod common;

use common::{ev, sim_store_opts};
use echolog::storage::sim::{Errno, FaultOp, FaultRule};
use echolog::{Error, Store};

#[test]
fn cursors_commit_read_list_and_move_back() {
    let (_disk, dir, opts) = sim_store_opts();
    let s = Store::open(&dir, opts).unwrap();
    for i in 0..5 {
        s.append(vec![ev("a", i)]).unwrap();
    }
    assert_eq!(s.cursor("billing").unwrap(), None);
    s.commit_cursor("billing", 4).unwrap();
    s.commit_cursor("search.v2:replay-1", 6).unwrap();
    assert_eq!(s.cursor("billing").unwrap(), Some(4));
    s.commit_cursor("billing", 2).unwrap();
    assert_eq!(
        s.cursors().unwrap(),
        vec![
            ("billing".to_string(), 2),
            ("search.v2:replay-1".to_string(), 6)
        ]
    );
    let e = s.commit_cursor("billing", 7).unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument(_)) && e.to_string().contains("last_seq + 1 = 6"),
        "{e}"
    );
    for bad in ["", "has space", "slash/x", &"x".repeat(129)] {
        let e = s.commit_cursor(bad, 1).unwrap_err();
        assert!(e.to_string().contains("name"), "{bad:?}: {e}");
    }
}

#[test]
fn a_committed_cursor_survives_crashes_and_power_losses() {
    for seed in 0..16u64 {
        let (disk, dir, opts) = sim_store_opts();
        let s = Store::open(&dir, opts.clone()).unwrap();
        s.append(vec![ev("a", 1), ev("a", 2)]).unwrap();
        s.commit_cursor("c", 3).unwrap();
        drop(s);
        if seed % 2 == 0 {
            disk.power_loss(seed);
        } else {
            disk.crash();
        }
        let s = Store::open(&dir, opts).unwrap();
        assert_eq!(s.cursor("c").unwrap(), Some(3), "seed {seed}");
    }
}

#[test]
fn a_failed_fsync_of_the_cursors_file_is_read_only_and_leaves_old_or_new() {
    for seed in 0..8u64 {
        let (disk, dir, opts) = sim_store_opts();
        let s = Store::open(&dir, opts.clone()).unwrap();
        s.append(vec![ev("a", 1), ev("a", 2)]).unwrap();
        s.commit_cursor("c", 1).unwrap();
        disk.add_rule(FaultRule::new(FaultOp::Sync, Errno::Eio).path("CURSORS"));
        let e = s.commit_cursor("c", 3).unwrap_err();
        assert!(matches!(e, Error::ReadOnly(_)), "{e}");
        assert!(s.is_read_only());
        assert_eq!(s.cursor("c").unwrap(), Some(1), "nothing changed in memory");
        drop(s);
        disk.power_loss(seed);
        let s = Store::open(&dir, opts).unwrap();
        assert_eq!(
            s.cursor("c").unwrap(),
            Some(1),
            "a failed temp file never replaces the old"
        );
    }
}

#[test]
fn a_corrupt_cursors_file_is_reported_and_the_rest_serves() {
    let (disk, dir, opts) = sim_store_opts();
    let s = Store::open(&dir, opts.clone()).unwrap();
    s.append(vec![ev("a", 1)]).unwrap();
    s.commit_cursor("c", 1).unwrap();
    drop(s);
    let p = dir.join("CURSORS");
    let mut b = disk.read_file(&p).unwrap();
    b[10] ^= 1;
    disk.write_file(&p, &b);
    let s = Store::open(&dir, opts).unwrap();
    let e = s.cursor("c").unwrap_err().to_string();
    assert!(e.contains("CURSORS") && e.contains("corruption"), "{e}");
    assert!(
        s.commit_cursor("c", 1).is_err(),
        "not overwritten: the other cursors would be lost"
    );
    s.append(vec![ev("a", 2)]).unwrap();
}
