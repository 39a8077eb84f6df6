//! The fuzz targets' interesting inputs, kept in `fuzz/regressions/<target>/`, run through the
//! same checks the fuzzer runs (`fuzz/checks.rs`), on stable. See `fuzz/README.md`.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use grove::nix::compression::Compression;
use grove::nix::export;
use grove::nix::nar::{self, Encoder};
use grove::nix::narinfo::{NarInfo, PathInfo};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs every file in `fuzz/regressions/<target>/` through `check`; an empty
/// folder fails.
fn run(target: &str, check: fn(&[u8])) {
    let dir = root().join("fuzz/regressions").join(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("listing regressions").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no regression inputs", dir.display());
    failures(target, check, &files);
}

/// Checks each of `files`; fails naming those that panicked.
fn failures(target: &str, check: fn(&[u8]), files: &[PathBuf]) {
    let failed: Vec<String> = files
        .iter()
        .filter(|f| {
            let data = fs::read(f).expect("reading a regression input");
            panic::catch_unwind(AssertUnwindSafe(|| check(&data))).is_err()
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{target}: {} of {} inputs failed: {failed:#?}",
        failed.len(),
        files.len()
    );
}

#[test]
fn nar() {
    run("nar", checks::nar);
}

#[test]
fn narinfo() {
    run("narinfo", checks::narinfo);
}

#[test]
fn export() {
    run("export", checks::export);
}

#[test]
fn range() {
    run("range", checks::range);
}

#[test]
fn raw_objects() {
    run("raw_objects", checks::raw_objects);
}

#[test]
fn cache_file() {
    run("cache_file", checks::cache_file);
}

#[test]
fn upload() {
    run("upload", checks::upload);
}

// ---------------------------------------------------------------------------------------------
// Seeds

/// Writes valid inputs for every target into `fuzz/corpus/<target>/seed-*`, so fuzzing starts
/// deep in each format: `cargo test --test fuzz_regressions -- --ignored write_seed_corpus`.
#[test]
#[ignore = "writes the fuzz seed corpus; run by hand"]
fn write_seed_corpus() {
    let mut seeds: Vec<(&str, Vec<u8>)> = Vec::new();
    let nars = sample_nars();
    for n in &nars {
        seeds.push(("nar", n.clone()));
    }

    let infos: Vec<PathInfo> = nars.iter().enumerate().map(|(i, n)| info_of(n, i)).collect();
    for ni in sample_narinfos(&infos[1]) {
        seeds.push(("narinfo", ni.into_bytes()));
    }

    let mut stream = Vec::new();
    for (n, info) in nars.iter().zip(&infos).take(3) {
        export::write_header(&mut stream).unwrap();
        stream.extend_from_slice(n);
        export::write_trailer(&mut stream, info).unwrap();
        seeds.push(("export", [&stream[..], &0u64.to_le_bytes()].concat()));
    }

    for (size, value) in [
        (100u64, "bytes=0-9"),
        (100, "bytes=90-"),
        (100, "bytes=-10"),
        (100, "Bytes = 1-1"),
        (100, "bytes=0-1,5-6"),
        (100, "bytes=100-"),
        (0, "bytes=0-"),
        (u64::MAX, "bytes=18446744073709551614-18446744073709551615"),
    ] {
        seeds.push(("range", [&size.to_le_bytes()[..], value.as_bytes()].concat()));
    }

    let h = infos[0].path.hash();
    for name in [
        "nix-cache-info".to_string(),
        format!("{h}.narinfo"),
        format!("{h}.ls"),
        format!("nar/{h}.nar"),
        format!("nar/{h}.nar.xz"),
        format!("nar/{}.nar.zst", infos[0].nar_hash.to_nix32()),
        "nar/abc.nar.bz2".to_string(),
    ] {
        seeds.push(("cache_file", name.into_bytes()));
    }

    for (i, compression) in [
        Compression::None,
        Compression::Xz,
        Compression::Zstd,
        Compression::Bzip2,
    ]
    .into_iter()
    .enumerate()
    {
        let (n, info) = (&nars[i % nars.len()], &infos[i % nars.len()]);
        seeds.push(("upload", upload_input(n, info, compression, i % 2 == 1)));
    }
    seeds.push(("upload", upload_input(&nars[4], &infos[4], Compression::None, false)));

    for (i, (target, data)) in seeds.iter().enumerate() {
        let dir = root().join("fuzz/corpus").join(target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("seed-{i:02}")), data).unwrap();
    }
}

/// Small NARs of every node kind, names that Git stores escaped included.
fn sample_nars() -> Vec<Vec<u8>> {
    let nar_of = |build: &dyn Fn(&mut Encoder<&mut Vec<u8>>) -> std::io::Result<()>| {
        let mut buf = Vec::new();
        build(&mut Encoder::new(&mut buf).unwrap()).unwrap();
        buf
    };
    vec![
        nar_of(&|e| e.file(false, 11, &mut &b"hello world"[..])),
        nar_of(&|e| e.file(true, 8, &mut &b"#!/bin/x"[..])),
        nar_of(&|e| e.symlink(b"../target")),
        nar_of(&|e| {
            e.dir_start()?;
            e.dir_end()
        }),
        nar_of(&|e| {
            e.dir_start()?;
            for name in [&b".git"[..], b"a", b"a.b", b"bin", b"grove~x", b"link"] {
                e.entry_start(name)?;
                match name {
                    b"bin" => {
                        e.dir_start()?;
                        e.entry_start(b"run")?;
                        e.file(true, 3, &mut &b"run"[..])?;
                        e.entry_end()?;
                        e.dir_end()?;
                    }
                    b"link" => e.symlink(b"bin/run")?,
                    _ => e.file(false, name.len() as u64, &mut &name[..])?,
                }
                e.entry_end()?;
            }
            e.dir_end()
        }),
    ]
}

fn info_of(nar: &[u8], i: usize) -> PathInfo {
    let (_, nar_hash, nar_size) = nar::parse(&mut &nar[..], &mut nar::Discard).unwrap();
    let path: grove::nix::store_path::StorePath =
        format!("/nix/store/{}-seed-{i}", ["0", "1", "2", "3", "4"][i % 5].repeat(32))
            .parse()
            .unwrap();
    PathInfo {
        path: path.clone(),
        nar_hash,
        nar_size,
        references: if i == 2 {
            BTreeSet::from([path])
        } else {
            BTreeSet::new()
        },
        deriver: None,
        ca: None,
        sigs: Vec::new(),
    }
}

fn sample_narinfos(info: &PathInfo) -> Vec<String> {
    let plain = NarInfo {
        info: info.clone(),
        url: Some(format!("nar/{}.nar", info.path.hash())),
        compression: Some("none".into()),
        file_hash: None,
        file_size: None,
    }
    .render();
    let h = info.path.hash();
    vec![
        plain.clone(),
        format!(
            "StorePath: /nix/store/0q43idch209zsdngl8yl79x0y79aajib-nix-2.8.1\n\
             URL: nar/000y5y39fnxp2ijj8cmdgvmia6wwcrws1q6fbcr1fkf5rs2dm8lr.nar.xz\n\
             Compression: xz\n\
             FileHash: sha256:000y5y39fnxp2ijj8cmdgvmia6wwcrws1q6fbcr1fkf5rs2dm8lr\n\
             FileSize: 100\n\
             NarHash: sha256-{}\n\
             NarSize: 400\n\
             References: 0q43idch209zsdngl8yl79x0y79aajib-nix-2.8.1 1q43idch209zsdngl8yl79x0y79aajib-glibc\n\
             Deriver: 2q43idch209zsdngl8yl79x0y79aajib-nix-2.8.1.drv\n\
             Sig: cache.nixos.org-1:{}\n\
             CA: fixed:r:sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0\n\
             Unknown: field\n",
            "a".repeat(43) + "=",
            "A".repeat(86) + "==",
        ),
        format!(
            "StorePath: /nix/store/{h}-x\nNarHash: sha256:{}\nNarSize: 0\nReferences: \nDeriver: unknown-deriver\nCA: \n",
            "0a".repeat(32)
        ),
    ]
}

/// An upload input (see `checks::upload`): flags, narinfo, `\0\0\0\0`, NAR file.
fn upload_input(nar: &[u8], info: &PathInfo, compression: Compression, stem_is_hash: bool) -> Vec<u8> {
    let file = compression
        .encode(Vec::new(), |w: &mut dyn Write| w.write_all(nar))
        .unwrap();
    let stem = if stem_is_hash {
        info.path.hash().to_string()
    } else {
        grove::nix::hash::NarHash::of(&file).to_nix32()
    };
    let ni = NarInfo {
        info: info.clone(),
        url: Some(format!("nar/{stem}.nar{}", compression.extension())),
        compression: Some(compression.name().into()),
        file_hash: (compression != Compression::None).then(|| grove::nix::hash::NarHash::of(&file)),
        file_size: (compression != Compression::None).then_some(file.len() as u64),
    };
    [&[3u8][..], ni.render().as_bytes(), b"\0\0\0\0", &file].concat()
}
