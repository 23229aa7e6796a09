use std::fs;
use std::os::unix::fs::PermissionsExt;

use proptest::prelude::*;

use super::*;

fn uuid(n: u128) -> Uuid {
    Uuid::from_u128(0x1234_5678_9abc_4def_8000_0000_0000_0000 | n)
}

fn minimal(n: u128) -> Definition {
    Definition {
        uuid: uuid(n),
        profile: "vgpu-1g".into(),
        gpu: None,
        auto: false,
        socket_owner: None,
        socket_group: None,
        socket_mode: None,
    }
}

fn full(n: u128) -> Definition {
    Definition {
        uuid: uuid(n),
        profile: "vgpu-2g \"quoted\" \\ é".into(),
        gpu: Some("gpu0".into()),
        auto: true,
        socket_owner: Some("qemu".into()),
        socket_group: Some("107".into()),
        socket_mode: Some("0660".into()),
    }
}

fn opened() -> (tempfile::TempDir, StateDir) {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path().join("state")).unwrap();
    (dir, state)
}

fn write_definition(state: &StateDir, n: u128, text: &str) -> PathBuf {
    let path = state.path_of(uuid(n));
    fs::write(&path, text).unwrap();
    path
}

fn problems(err: &StateError) -> Vec<(String, usize, usize, String)> {
    err.diagnostics()
        .iter()
        .map(|d| {
            let file = d.location.path.file_name().unwrap().to_string_lossy();
            (
                file.into_owned(),
                d.location.line,
                d.location.column,
                d.problem.clone(),
            )
        })
        .collect()
}

#[test]
fn open_creates_the_directory_and_its_parents_with_their_modes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/state");
    let state = StateDir::open(&path).unwrap();
    assert_eq!(state.path(), path);
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&path), 0o755);
    assert_eq!(mode(&path.join("vgpus")), 0o700);
    // Opening again finds it and changes nothing.
    StateDir::open(&path).unwrap();
    assert_eq!(mode(&path.join("vgpus")), 0o700);
}

#[test]
fn open_fails_naming_the_path_when_it_cannot_create() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    fs::write(&file, "").unwrap();
    let err = StateDir::open(file.join("state")).unwrap_err();
    assert!(matches!(err, StateError::Create { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&file.display().to_string()),
        "{err}"
    );
}

#[test]
fn path_of_is_the_lower_case_uuid_under_vgpus() {
    let (_dir, state) = opened();
    let u = Uuid::parse_str("ABCDEF01-2345-4678-9ABC-DEF012345678").unwrap();
    assert_eq!(
        state.path_of(u),
        state
            .path()
            .join("vgpus/abcdef01-2345-4678-9abc-def012345678.toml")
    );
}

#[test]
fn every_field_round_trips() {
    let (_dir, state) = opened();
    for d in [full(1), minimal(2)] {
        state.save(&d).unwrap();
    }
    assert_eq!(state.load().unwrap(), vec![full(1), minimal(2)]);
    // Replacing keeps one file with the new content.
    let mut changed = full(1);
    changed.gpu = None;
    changed.auto = false;
    changed.socket_mode = None;
    state.save(&changed).unwrap();
    assert_eq!(state.load().unwrap(), vec![changed, minimal(2)]);
}

#[test]
fn the_file_says_who_writes_it_and_how_to_change_it() {
    let (_dir, state) = opened();
    state.save(&full(1)).unwrap();
    let text = fs::read_to_string(state.path_of(uuid(1))).unwrap();
    assert!(
        text.starts_with("# A vGPU definition, written by vgpud"),
        "{text}"
    );
    assert!(text.contains("`vgpuctl modify`"), "{text}");
    assert!(text.contains("socket_mode = \"0660\"\n"), "{text}");
}

#[test]
fn load_sorts_by_uuid() {
    let (_dir, state) = opened();
    for n in [3, 1, 2] {
        state.save(&minimal(n)).unwrap();
    }
    let uuids: Vec<Uuid> = state.load().unwrap().iter().map(|d| d.uuid).collect();
    assert_eq!(uuids, vec![uuid(1), uuid(2), uuid(3)]);
}

#[test]
fn a_file_written_by_hand_defaults_auto_to_false() {
    let (_dir, state) = opened();
    write_definition(&state, 1, "profile = 'vgpu-1g'\n");
    assert_eq!(state.load().unwrap(), vec![minimal(1)]);
}

#[test]
fn files_not_named_by_a_lower_case_uuid_are_ignored() {
    let (_dir, state) = opened();
    state.save(&minimal(1)).unwrap();
    let vgpus = state.path().join("vgpus");
    let upper = uuid(2).hyphenated().to_string().to_uppercase();
    let simple = uuid(3).simple().to_string();
    for name in [
        "notes.txt".to_string(),
        format!("{upper}.toml"),
        format!("{simple}.toml"),
        format!("{}.toml.bak", uuid(4)),
        format!("{}", uuid(5)),
    ] {
        fs::write(vgpus.join(name), "not = [toml").unwrap();
    }
    fs::create_dir(vgpus.join("subdir")).unwrap();
    assert_eq!(state.load().unwrap(), vec![minimal(1)]);
}

#[test]
fn a_directory_named_like_a_definition_is_refused() {
    let (_dir, state) = opened();
    fs::create_dir(state.path_of(uuid(1))).unwrap();
    let err = state.load().unwrap_err();
    assert_eq!(problems(&err)[0].3, "not a regular file");
}

#[test]
fn a_symbolic_link_named_like_a_definition_is_refused() {
    let (dir, state) = opened();
    let target = dir.path().join("elsewhere.toml");
    fs::write(&target, "profile = \"p\"\n").unwrap();
    std::os::unix::fs::symlink(&target, state.path_of(uuid(1))).unwrap();
    let err = state.load().unwrap_err();
    assert_eq!(problems(&err)[0].3, "not a regular file");
}

#[test]
fn leftover_temporary_files_are_removed_at_open() {
    let (dir, state) = opened();
    state.save(&minimal(1)).unwrap();
    let vgpus = state.path().join("vgpus");
    let leftover = vgpus.join(format!("{TEMP_PREFIX}{}-99-0", uuid(1)));
    fs::write(&leftover, "profile = \"half").unwrap();
    // Until the next open, load skips it as a write in flight.
    assert_eq!(state.load().unwrap(), vec![minimal(1)]);
    drop(state);
    let state = StateDir::open(dir.path().join("state")).unwrap();
    assert!(!leftover.exists());
    assert_eq!(state.load().unwrap(), vec![minimal(1)]);
}

#[test]
fn every_problem_of_every_file_is_reported_at_once_with_line_and_column() {
    let (_dir, state) = opened();
    write_definition(
        &state,
        1,
        "# by hand\nprofile = 7\ncolour = \"blue\"\nauto = \"yes\"\nsocket_mode = \"06\\u000760\"\n",
    );
    write_definition(&state, 2, "gpu = \"gpu0\"\nsize = 1\n");
    write_definition(&state, 3, "profile = \"vgpu-1g\"\nauto = tru\n");
    let err = state.load().unwrap_err();
    let f = |n: u128| format!("{}.toml", uuid(n));
    assert_eq!(
        problems(&err),
        vec![
            (
                f(1),
                2,
                11,
                "profile must be a string, found integer".into()
            ),
            (f(1), 3, 1, "unknown key `colour`".into()),
            (
                f(1),
                4,
                8,
                "auto must be true or false, found string".into()
            ),
            (
                f(1),
                5,
                15,
                "socket_mode holds the control character U+0007, which a value may not".into()
            ),
            (f(2), 1, 1, "missing key `profile`".into()),
            (f(2), 2, 1, "unknown key `size`".into()),
            (f(3), 2, 8, "invalid string; expected `\"`, `'`".into()),
        ]
    );
    // One line per problem, each starting with file:line:column.
    let text = err.to_string();
    let path = state.path_of(uuid(1));
    assert!(
        text.starts_with(&format!(
            "{}:2:11: profile must be a string, found integer\n  help: quote it",
            path.display()
        )),
        "{text}"
    );
}

#[test]
fn a_value_in_escapes_is_located_at_its_quotes() {
    let (_dir, state) = opened();
    write_definition(&state, 1, "profile = \"\"\"\na\\u007f\"\"\"\n");
    let err = state.load().unwrap_err();
    let p = problems(&err);
    assert_eq!((p[0].1, p[0].2), (1, 11), "{p:?}");
    assert!(p[0].3.contains("U+007F"), "{p:?}");
}

#[test]
fn bytes_that_are_not_utf8_are_located() {
    let (_dir, state) = opened();
    let path = state.path_of(uuid(1));
    fs::write(&path, b"profile = \"ok\"\ngpu = \"\xff\"\n").unwrap();
    let err = state.load().unwrap_err();
    assert_eq!(
        problems(&err),
        vec![(
            format!("{}.toml", uuid(1)),
            2,
            8,
            "byte 0xff is not UTF-8 text".into()
        )]
    );
}

#[test]
fn values_that_could_not_be_read_back_are_not_saved() {
    let (_dir, state) = opened();
    let long = "x".repeat(MAX_VALUE_BYTES + 1);
    type Change = fn(&mut Definition, String);
    let cases: [(Change, &str); 4] = [
        (|d, _| d.profile = String::new(), "profile is empty"),
        (
            |d, _| d.gpu = Some("gpu\n0".into()),
            "control character U+000A",
        ),
        (|d, long| d.socket_owner = Some(long), "257 bytes long"),
        (
            |d, _| d.socket_group = Some(String::new()),
            "leave the key out",
        ),
    ];
    for (change, expected) in cases {
        let mut d = minimal(1);
        change(&mut d, long.clone());
        let err = state.save(&d).unwrap_err();
        assert!(matches!(err, StateError::Unsavable { .. }), "{err:?}");
        assert!(err.to_string().contains(expected), "{err}");
    }
    assert!(state.load().unwrap().is_empty());
    // The longest allowed value does round-trip.
    let mut d = minimal(1);
    d.socket_owner = Some("x".repeat(MAX_VALUE_BYTES));
    state.save(&d).unwrap();
    assert_eq!(state.load().unwrap(), vec![d]);
}

#[test]
fn a_long_value_written_by_hand_is_refused() {
    let (_dir, state) = opened();
    let long = "y".repeat(MAX_VALUE_BYTES + 1);
    write_definition(&state, 1, &format!("profile = \"{long}\"\n"));
    let err = state.load().unwrap_err();
    assert_eq!(
        problems(&err),
        vec![(
            format!("{}.toml", uuid(1)),
            1,
            12,
            "profile is 257 bytes long, more than the 256 a value may have".into()
        )]
    );
}

#[test]
fn a_file_over_the_size_limit_is_refused_and_one_at_it_loads() {
    let (_dir, state) = opened();
    let body = "profile = \"vgpu-1g\"\n";
    let padding = "#".repeat(MAX_FILE_BYTES - body.len() - 1) + "\n";
    write_definition(&state, 1, &format!("{body}{padding}"));
    assert_eq!(state.load().unwrap(), vec![minimal(1)]);
    write_definition(&state, 1, &format!("{body}#{padding}"));
    let err = state.load().unwrap_err();
    let p = problems(&err);
    assert_eq!((p[0].1, p[0].2), (1, 1));
    assert!(p[0].3.contains("more than 65536 bytes"), "{p:?}");
}

#[test]
fn the_number_of_definitions_is_bounded() {
    let (_dir, state) = opened();
    // Written directly: thousands of synced saves would only slow the test.
    for n in 0..MAX_DEFINITIONS as u128 {
        write_definition(&state, n, "profile = \"p\"\n");
    }
    assert_eq!(state.load().unwrap().len(), MAX_DEFINITIONS);
    let err = state.save(&minimal(MAX_DEFINITIONS as u128)).unwrap_err();
    assert!(matches!(err, StateError::Full { .. }), "{err:?}");
    assert!(err.to_string().contains("undefine one first"), "{err}");
    // A definition already there may still be changed.
    state.save(&minimal(0)).unwrap();
    // One more by hand makes the directory unloadable, with a clear error.
    write_definition(&state, MAX_DEFINITIONS as u128, "profile = \"p\"\n");
    let err = state.load().unwrap_err();
    assert!(
        matches!(err, StateError::TooMany { count, .. } if count == MAX_DEFINITIONS + 1),
        "{err:?}"
    );
    assert!(err.to_string().contains("more than the 4096"), "{err}");
    // After removing one, it loads and accepts no new one.
    state.remove(uuid(1)).unwrap();
    assert_eq!(state.load().unwrap().len(), MAX_DEFINITIONS);
}

#[test]
fn remove_deletes_and_a_missing_one_is_not_found() {
    let (_dir, state) = opened();
    state.save(&minimal(1)).unwrap();
    state.remove(uuid(1)).unwrap();
    assert!(state.load().unwrap().is_empty());
    let err = state.remove(uuid(1)).unwrap_err();
    assert!(matches!(err, StateError::NotFound { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains(&state.path_of(uuid(1)).display().to_string()),
        "{err}"
    );
}

#[test]
fn a_save_that_fails_leaves_the_previous_file_and_no_temporary() {
    let (_dir, state) = opened();
    state.save(&minimal(1)).unwrap();
    let vgpus = state.path().join("vgpus");
    // A directory where the file should be makes the rename fail.
    fs::create_dir(state.path_of(uuid(2))).unwrap();
    fs::write(state.path_of(uuid(2)).join("x"), "").unwrap();
    let err = state.save(&minimal(2)).unwrap_err();
    assert!(matches!(err, StateError::Write { .. }), "{err:?}");
    let names: Vec<String> = fs::read_dir(&vgpus)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with(TEMP_PREFIX)),
        "{names:?}"
    );
}

fn tomlish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("profile".to_string()),
        Just("gpu".to_string()),
        Just("auto".to_string()),
        Just("socket_mode".to_string()),
        Just(" = ".to_string()),
        Just("\"".to_string()),
        Just("'".to_string()),
        Just("\n".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("true".to_string()),
        Just("\\u0007".to_string()),
        Just("#".to_string()),
        "[a-z0-9 é.]{0,6}",
    ];
    prop::collection::vec(token, 0..24).prop_map(|t| t.concat())
}

proptest! {
    #[test]
    fn load_never_panics_on_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let (_dir, state) = opened();
        fs::write(state.path_of(uuid(1)), &bytes).unwrap();
        let _ = state.load();
    }

    #[test]
    fn load_never_panics_on_tomlish_text(text in tomlish()) {
        let (_dir, state) = opened();
        fs::write(state.path_of(uuid(1)), &text).unwrap();
        if let Err(e) = state.load() {
            prop_assert!(!e.diagnostics().is_empty(), "{e:?}");
        }
    }
}
