use std::fs;
use std::path::{Path, PathBuf};

use super::*;
use crate::host::pool;
use crate::host::volume::{self, VolumeSpec};

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Two pools of project `lab` (a source and a target) in a temp dir.
fn pools(test: &str) -> (Dir, PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("vmctl-transfer-{test}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let (a, b) = (dir.join("a"), dir.join("b"));
    for p in [&a, &b] {
        pool::create_pool(&dir, "lab", "p", p).unwrap();
    }
    (Dir(dir), a, b)
}

fn make(pool: &Path, name: &str, size: u64) {
    let spec = VolumeSpec {
        name,
        size,
        from: None,
        source: None,
        prevent_destroy: false,
        cancel: None,
    };
    volume::create_volume("lab", pool, &spec).unwrap();
}

/// Copies `name` from pool `a` to pool `b` as the controller does; the chunks read.
fn copy(a: &Path, b: &Path, name: &str) -> Vec<(u64, usize)> {
    let first = read_chunk("lab", a, name, 0, CHUNK).unwrap();
    let begin = ReceivePart::Begin {
        size: first.size,
        from: None,
        from_digest: first.from_digest.clone(),
        prevent_destroy: false,
    };
    receive("lab", b, name, &begin).unwrap();
    let mut seen = Vec::new();
    let mut chunk = first;
    loop {
        seen.push((chunk.offset, chunk.data.len()));
        if !chunk.data.is_empty() {
            let data = ReceivePart::Data {
                offset: chunk.offset,
                data: chunk.data.clone(),
            };
            receive("lab", b, name, &data).unwrap();
        }
        if chunk.next >= chunk.size {
            break;
        }
        chunk = read_chunk("lab", a, name, chunk.next, CHUNK).unwrap();
    }
    receive("lab", b, name, &ReceivePart::Finish).unwrap();
    seen
}

#[test]
fn a_sparse_volume_arrives_byte_for_byte_without_its_holes() {
    let (_dir, a, b) = pools("sparse");
    let size = 64 << 20;
    make(&a, "root", size);
    let path = volume::volume_path(&a, "root");
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(b"first block", 0).unwrap();
    file.write_all_at(&vec![7u8; 5 << 20], 20 << 20).unwrap();
    file.write_all_at(b"last", size - 4).unwrap();
    drop(file);
    let seen = copy(&a, &b, "root");
    // Only the data runs were read: the first block, 5 MiB in two chunks, the end.
    assert!(seen.len() <= 6, "{seen:?}");
    let moved = volume::volume_path(&b, "root");
    assert_eq!(fs::read(&moved).unwrap(), fs::read(&path).unwrap());
    assert_eq!(fs::metadata(&moved).unwrap().len(), size);
    // The target is sparse: far less allocated than its size.
    use std::os::unix::fs::MetadataExt;
    assert!(fs::metadata(&moved).unwrap().blocks() * 512 < 16 << 20);
    assert!(!volume::partial_path(&b, "root").exists());
}

#[test]
fn the_volume_exists_only_once_finished_and_an_abort_leaves_none() {
    let (_dir, a, b) = pools("finish");
    make(&a, "root", 1 << 20);
    let begin = ReceivePart::Begin {
        size: 1 << 20,
        from: None,
        from_digest: None,
        prevent_destroy: true,
    };
    receive("lab", &b, "root", &begin).unwrap();
    assert!(!volume::volume_path(&b, "root").exists());
    assert!(volume::partial_path(&b, "root").exists());
    receive("lab", &b, "root", &ReceivePart::Abort).unwrap();
    assert!(!volume::partial_path(&b, "root").exists());
    assert!(!volume::volume_path(&b, "root").exists());
    // A finish without a partial file is refused.
    assert!(receive("lab", &b, "root", &ReceivePart::Finish).is_err());
}

#[test]
fn writes_past_the_size_or_into_a_complete_volume_are_refused() {
    let (_dir, a, b) = pools("bounds");
    make(&a, "root", 1 << 20);
    let begin = ReceivePart::Begin {
        size: 4096,
        from: None,
        from_digest: None,
        prevent_destroy: false,
    };
    receive("lab", &b, "root", &begin).unwrap();
    for (offset, len) in [(4090, 7), (u64::MAX, 1)] {
        let part = ReceivePart::Data {
            offset,
            data: vec![1; len],
        };
        let err = receive("lab", &b, "root", &part).unwrap_err();
        assert!(matches!(err, VolumeError::OutOfRange { .. }), "{err}");
    }
    receive("lab", &b, "root", &ReceivePart::Finish).unwrap();
    let part = ReceivePart::Data {
        offset: 0,
        data: vec![1; 8],
    };
    let err = receive("lab", &b, "root", &part).unwrap_err();
    assert!(matches!(err, VolumeError::VolumeExists { .. }), "{err}");
    // Nor is a volume of another project read, or a pool of another project written.
    assert!(read_chunk("shop", &a, "root", 0, CHUNK).is_err());
    assert!(receive("shop", &b, "other", &begin).is_err());
}

#[test]
fn a_chunk_crosses_json_as_base64() {
    let chunk = Chunk {
        size: 8,
        from_digest: None,
        offset: 0,
        data: vec![0, 1, 2, 255],
        next: 8,
    };
    let text = serde_json::to_string(&chunk).unwrap();
    assert!(text.contains("\"data\":\"AAEC/w==\""), "{text}");
    assert_eq!(serde_json::from_str::<Chunk>(&text).unwrap(), chunk);
}

#[test]
fn a_read_is_held_to_what_its_caller_needs() {
    use std::io::Write;
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(&[7u8; 256 << 10]).unwrap();
    let (start, data, next) = next_data(&f, 256 << 10, 64 << 10, 64 << 10).unwrap();
    assert_eq!((start, data.len(), next), (64 << 10, 64 << 10, 128 << 10));
    // Without a bound below it, a chunk's worth (here the rest of the file).
    let (_, data, next) = next_data(&f, 256 << 10, 0, CHUNK).unwrap();
    assert_eq!((data.len(), next), (256 << 10, 256 << 10));
}
