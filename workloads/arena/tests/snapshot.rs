//! Export, import and deltas preserve the game exactly.

use arena::{ImportError, Input, Session};
use proptest::prelude::*;

/// What happens to a session in one step of a script.
#[derive(Debug, Clone)]
enum Action {
    Join(u32),
    Leave(u32),
    Submit(u32, Input),
    Step,
    Freeze,
    Thaw,
}

fn action() -> impl Strategy<Value = Action> {
    let player = 0u32..6;
    prop_oneof![
        1 => player.clone().prop_map(Action::Join),
        1 => player.clone().prop_map(Action::Leave),
        6 => (player, 0u32..40, any::<i8>(), any::<i8>(), any::<u8>()).prop_map(
            |(p, seq, dx, dy, buttons)| Action::Submit(p, Input { seq, dx, dy, buttons })
        ),
        8 => Just(Action::Step),
        1 => Just(Action::Freeze),
        1 => Just(Action::Thaw),
    ]
}

fn run(s: &mut Session, script: &[Action]) {
    for a in script {
        match *a {
            Action::Join(p) => {
                s.join(p);
            }
            Action::Leave(p) => {
                s.leave(p);
            }
            Action::Submit(p, i) => {
                s.submit(p, i);
            }
            Action::Step => {
                s.step();
            }
            Action::Freeze => s.freeze(),
            Action::Thaw => s.thaw(),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// export -> import -> continue gives exactly what continuing on the source gives.
    #[test]
    fn export_import_continue_equals_continue(
        world in 0usize..5000,
        before in prop::collection::vec(action(), 0..80),
        after in prop::collection::vec(action(), 0..80),
    ) {
        let mut source = Session::new(42, world);
        run(&mut source, &before);
        let mut moved = Session::import(&source.export()).unwrap();
        prop_assert_eq!(&moved, &source);
        run(&mut source, &after);
        run(&mut moved, &after);
        prop_assert_eq!(moved, source);
    }

    /// Bulk copy at version V, the game goes on, then a delta since V brings the copy level.
    #[test]
    fn bulk_then_delta_equals_source(
        world in 0usize..5000,
        before in prop::collection::vec(action(), 0..80),
        during in prop::collection::vec(action(), 0..80),
        after in prop::collection::vec(action(), 0..40),
    ) {
        let mut source = Session::new(7, world);
        run(&mut source, &before);
        let version = source.version();
        let mut target = Session::import(&source.export()).unwrap();
        run(&mut source, &during);
        source.freeze();
        target.apply_delta(&source.export_delta(version)).unwrap();
        prop_assert_eq!(&target, &source);
        target.thaw();
        source.thaw();
        run(&mut source, &after);
        run(&mut target, &after);
        prop_assert_eq!(target, source);
    }

    /// Any corruption is refused and leaves the target untouched.
    #[test]
    fn corrupted_bytes_are_refused_without_harm(
        before in prop::collection::vec(action(), 0..40),
        during in prop::collection::vec(action(), 1..40),
        flip in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        let mut source = Session::new(9, 3000);
        run(&mut source, &before);
        let version = source.version();
        let target = Session::import(&source.export()).unwrap();
        run(&mut source, &during);
        let mut delta = source.export_delta(version);
        let i = flip.index(delta.len());
        delta[i] ^= mask;
        let mut t = target.clone();
        prop_assert!(t.apply_delta(&delta).is_err());
        prop_assert_eq!(&t, &target);
        let mut full = source.export();
        let i = flip.index(full.len());
        full[i] ^= mask;
        prop_assert!(Session::import(&full).is_err());
    }

    /// Truncated input never panics.
    #[test]
    fn truncated_bytes_are_refused(cut in any::<prop::sample::Index>()) {
        let mut s = Session::new(1, 2048);
        s.join(1);
        s.submit(1, Input { seq: 1, dx: 3, dy: -4, buttons: 1 });
        let bytes = s.export();
        let n = cut.index(bytes.len());
        prop_assert!(Session::import(&bytes[..n]).is_err());
    }
}

#[test]
fn mismatched_deltas_are_refused_with_clear_errors() {
    let mut a = Session::new(1, 2048);
    a.join(1);
    let v = a.version();
    let copy = Session::import(&a.export()).unwrap();
    a.step();
    let delta = a.export_delta(v);

    let mut other = Session::new(2, 2048);
    assert_eq!(
        other.apply_delta(&delta),
        Err(ImportError::WrongSession {
            expected: 2,
            found: 1
        })
    );
    let mut stale = copy.clone();
    stale.join(5);
    let err = stale.apply_delta(&delta).unwrap_err();
    assert!(matches!(err, ImportError::BaseMismatch { .. }), "{err}");
    assert!(err.to_string().contains("version"));
    assert_eq!(
        Session::import(&delta),
        Err(ImportError::WrongKind { expected: "full" })
    );
    let mut ok = copy.clone();
    assert_eq!(
        ok.apply_delta(&a.export()),
        Err(ImportError::WrongKind { expected: "delta" })
    );
    let mut v2 = a.export();
    v2[4] = 2;
    assert_eq!(
        Session::import(&v2),
        Err(ImportError::UnsupportedFormat { found: 2 })
    );
    assert_eq!(Session::import(b"nope"), Err(ImportError::BadMagic));
}

#[test]
fn deltas_are_small_when_little_changed() {
    let mut s = Session::new(1, 1 << 20);
    for p in 0..4 {
        s.join(p);
    }
    for _ in 0..60 {
        s.step();
    }
    let v = s.version();
    let full = s.export();
    for _ in 0..3 {
        s.step();
    }
    let delta = s.export_delta(v);
    assert!(full.len() > 1 << 20);
    // Three ticks of four players touch at most twelve 1 KiB chunks.
    assert!(delta.len() < 13 * 1024, "delta is {} bytes", delta.len());
}
