//! The limits every figure is reported beside: one core's SHA-256 rate over 4 MiB blocks, and
//! the disk's sequential O_DIRECT write and read of 4 MiB blocks (queue depth 2, measured
//! through the same glommio DMA path the engine uses).

use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

use holdall_engine::storage::dma::DmaStorage;
use holdall_engine::storage::{self, OpenMode, Storage};
use holdall_proto::limits::BLOCK_BYTES_MAX;
use holdall_proto::BlockHash;

/// GB/s of SHA-256 over 4 MiB blocks on this core.
pub fn sha256_gbps(total_bytes: usize) -> f64 {
    let block = crate::payload(1, BLOCK_BYTES_MAX);
    let n = total_bytes / BLOCK_BYTES_MAX;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(BlockHash::of(std::hint::black_box(&block)));
    }
    (n * BLOCK_BYTES_MAX) as f64 / t.elapsed().as_secs_f64() / 1e9
}

/// GB/s of AES-256-GCM sealing 4 MiB blocks in place on this core (the store's cipher).
pub fn aes_gcm_gbps(total_bytes: usize) -> f64 {
    let key = holdall_engine::store_key::StoreKey::from_bytes(&[3; 32]);
    let mut block = crate::payload(2, BLOCK_BYTES_MAX);
    let n = total_bytes / BLOCK_BYTES_MAX;
    let t = Instant::now();
    for i in 0..n {
        let mut nonce = [0u8; 12];
        nonce[..8].copy_from_slice(&(i as u64).to_le_bytes());
        std::hint::black_box(key.seal(nonce, b"aad", &mut block));
    }
    (n * BLOCK_BYTES_MAX) as f64 / t.elapsed().as_secs_f64() / 1e9
}

/// GB/s writing `total_bytes` sequentially in 4 MiB O_DIRECT writes, two in flight, then one
/// fdatasync; and GB/s reading it back the same way. Must run inside an executor.
pub async fn odirect_gbps(dir: &Path, total_bytes: usize) -> std::io::Result<(f64, f64)> {
    let medium = DmaStorage;
    medium.create_dir(dir).await?;
    let path = dir.join("limits.probe");
    let file = medium.open(&path, OpenMode::Create).await?;
    let n = total_bytes / BLOCK_BYTES_MAX;
    let bufs: Vec<Rc<storage::DmaBuffer>> = (0..2)
        .map(|i| {
            let mut b = storage::alloc_buffer(BLOCK_BYTES_MAX);
            b.as_bytes_mut()
                .copy_from_slice(&crate::payload(i, BLOCK_BYTES_MAX));
            Rc::new(b)
        })
        .collect();
    let t = Instant::now();
    for pair in (0..n).collect::<Vec<_>>().chunks(2) {
        let writes = pair.iter().map(|&i| {
            storage::write_all_at(&*file, bufs[i % 2].clone(), (i * BLOCK_BYTES_MAX) as u64)
        });
        for r in futures::future::join_all(writes).await {
            r?;
        }
    }
    file.sync().await?;
    let write = (n * BLOCK_BYTES_MAX) as f64 / t.elapsed().as_secs_f64() / 1e9;
    let t = Instant::now();
    for pair in (0..n).collect::<Vec<_>>().chunks(2) {
        let reads = pair.iter().map(|&i| {
            storage::read_exact_at(&*file, (i * BLOCK_BYTES_MAX) as u64, BLOCK_BYTES_MAX)
        });
        for r in futures::future::join_all(reads).await {
            r?;
        }
    }
    let read = (n * BLOCK_BYTES_MAX) as f64 / t.elapsed().as_secs_f64() / 1e9;
    drop(file);
    std::fs::remove_file(&path)?;
    Ok((write, read))
}

/// GB/s copying `total_bytes` from one file to another on the same disk in 4 MiB O_DIRECT
/// reads and writes, pipelined: up to `depth` reads ahead and `depth` writes in flight, then
/// one fdatasync. The disk's own rate for what compaction does, with nothing else to do
/// (no checksum, no index, no group commit). Must run inside an executor.
pub async fn odirect_copy_gbps(
    dir: &Path,
    total_bytes: usize,
    depth: usize,
) -> std::io::Result<f64> {
    use futures::stream::{FuturesUnordered, StreamExt};
    let medium = DmaStorage;
    medium.create_dir(dir).await?;
    let (from_path, to_path) = (dir.join("copy.from"), dir.join("copy.to"));
    let from = medium.open(&from_path, OpenMode::Create).await?;
    let to = medium.open(&to_path, OpenMode::Create).await?;
    let n = total_bytes / BLOCK_BYTES_MAX;
    let mut fill = storage::alloc_buffer(BLOCK_BYTES_MAX);
    fill.as_bytes_mut()
        .copy_from_slice(&crate::payload(7, BLOCK_BYTES_MAX));
    let fill = Rc::new(fill);
    for i in 0..n {
        storage::write_all_at(&*from, fill.clone(), (i * BLOCK_BYTES_MAX) as u64).await?;
    }
    from.sync().await?;
    let t = Instant::now();
    let mut reads = futures::stream::iter(0..n)
        .map(|i| {
            let from = from.clone();
            async move {
                let at = (i * BLOCK_BYTES_MAX) as u64;
                (
                    at,
                    storage::read_exact_at(&*from, at, BLOCK_BYTES_MAX).await,
                )
            }
        })
        .buffered(depth);
    let mut writes = FuturesUnordered::new();
    while let Some((at, read)) = reads.next().await {
        let mut b = storage::alloc_buffer(BLOCK_BYTES_MAX);
        b.as_bytes_mut().copy_from_slice(&read?);
        writes.push(storage::write_all_at(&*to, Rc::new(b), at));
        while writes.len() >= depth {
            writes.next().await.expect("a write in flight")?;
        }
    }
    while let Some(w) = writes.next().await {
        w?;
    }
    to.sync().await?;
    let copy = (n * BLOCK_BYTES_MAX) as f64 / t.elapsed().as_secs_f64() / 1e9;
    drop(reads);
    drop(writes);
    drop((from, to));
    std::fs::remove_file(&from_path)?;
    std::fs::remove_file(&to_path)?;
    Ok(copy)
}

/// GB/s of one TCP stream over loopback: a thread writes `total_bytes` in 4 MiB writes while
/// this one reads them.
pub fn loopback_gbps(total_bytes: usize) -> std::io::Result<f64> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut s = std::net::TcpStream::connect(addr)?;
        let block = crate::payload(3, BLOCK_BYTES_MAX);
        for _ in 0..total_bytes / BLOCK_BYTES_MAX {
            s.write_all(&block)?;
        }
        Ok(())
    });
    let (mut s, _) = listener.accept()?;
    let mut buf = vec![0u8; BLOCK_BYTES_MAX];
    let t = Instant::now();
    let mut got = 0;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let gbps = got as f64 / t.elapsed().as_secs_f64() / 1e9;
    writer
        .join()
        .map_err(|_| std::io::Error::other("writer panicked"))??;
    Ok(gbps)
}
