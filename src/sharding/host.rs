//! Host-side splitting of a whole row-major array into one shard per partition, and reassembly.
//!
//! Partition `p` has mesh coordinates `partition_coords(p)` (row-major over the mesh axes). Along a tensor
//! dim split over mesh axes `[a, b]` (major to minor) the shard index is `coord[a] * size[b] + coord[b]`, and
//! the shard covers `[index * len, (index + 1) * len)` with `len = dim / (size[a] * size[b])`. Partitions
//! that differ only in mesh axes the sharding does not name hold identical copies.

use crate::ir::{Mesh, Sharding};

/// Mesh coordinates of partition `p` (row-major: the last mesh axis varies fastest).
pub fn partition_coords(mesh: &Mesh, p: usize) -> Vec<i64> {
    let mut rest = p as i64;
    let mut coords = vec![0; mesh.axes.len()];
    for (i, (_, size)) in mesh.axes.iter().enumerate().rev() {
        coords[i] = rest % size;
        rest /= size;
    }
    assert_eq!(rest, 0, "partition {p} is outside a mesh of {} devices", mesh.num_devices());
    coords
}

/// Per dim, how many pieces the sharding cuts it into.
fn split_counts(dims: &[i64], sharding: &Sharding, mesh: &Mesh) -> Vec<i64> {
    assert_eq!(
        dims.len(),
        sharding.dims.len(),
        "sharding {:?} does not match the rank of dims {dims:?}",
        sharding.dims
    );
    dims.iter()
        .zip(&sharding.dims)
        .map(|(&d, axes)| {
            let n: i64 = axes
                .iter()
                .map(|a| mesh.axis_size(a).unwrap_or_else(|| panic!("sharding names mesh axis `{a}` not in {mesh:?}")))
                .product();
            assert!(n > 0 && d % n == 0, "dim {d} is not divisible by its {n} shards (mesh axes {axes:?})");
            n
        })
        .collect()
}

/// The dims of each shard.
pub fn shard_dims(dims: &[i64], sharding: &Sharding, mesh: &Mesh) -> Vec<i64> {
    dims.iter().zip(split_counts(dims, sharding, mesh)).map(|(d, n)| d / n).collect()
}

/// The element offset of partition `p`'s shard along each dim.
pub fn shard_offsets(dims: &[i64], sharding: &Sharding, mesh: &Mesh, p: usize) -> Vec<i64> {
    let coords = partition_coords(mesh, p);
    let local = shard_dims(dims, sharding, mesh);
    sharding
        .dims
        .iter()
        .zip(&local)
        .map(|(axes, len)| {
            let mut index = 0;
            for a in axes {
                let i = mesh.axes.iter().position(|(n, _)| n == a).expect("mesh axis checked in split_counts");
                index = index * mesh.axes[i].1 + coords[i];
            }
            index * len
        })
        .collect()
}

/// The distinct shards of an array: each shard's element offsets with the partitions that hold it (in
/// partition order), in the order of their first partition. Replicated shards appear once, so a loader
/// reads each once and a checkpoint writes each once.
pub fn unique_shards(dims: &[i64], sharding: &Sharding, mesh: &Mesh) -> Vec<(Vec<i64>, Vec<usize>)> {
    let mut out: Vec<(Vec<i64>, Vec<usize>)> = Vec::new();
    for p in 0..mesh.num_devices() as usize {
        let offsets = shard_offsets(dims, sharding, mesh, p);
        match out.iter_mut().find(|(o, _)| *o == offsets) {
            Some((_, parts)) => parts.push(p),
            None => out.push((offsets, vec![p])),
        }
    }
    out
}

/// Copies the `block_dims` box at `offsets` out of a row-major array of shape `full_dims`.
pub fn extract_region(full: &[u8], full_dims: &[i64], offsets: &[i64], block_dims: &[i64], elem: usize) -> Vec<u8> {
    let mut out = vec![0u8; block_dims.iter().product::<i64>() as usize * elem];
    if !out.is_empty() {
        for_each_run(full_dims, block_dims, offsets, elem, |src, dst, n| out[dst..dst + n].copy_from_slice(&full[src..src + n]));
    }
    out
}

/// Copies a box (shape `block_dims`, row-major bytes) into a row-major array of shape `full_dims` at
/// `offsets`.
pub fn place_region(full: &mut [u8], full_dims: &[i64], block: &[u8], offsets: &[i64], block_dims: &[i64], elem: usize) {
    if !block.is_empty() {
        for_each_run(full_dims, block_dims, offsets, elem, |dst, src, n| full[dst..dst + n].copy_from_slice(&block[src..src + n]));
    }
}

/// Calls `f(full_byte_offset, block_byte_offset, bytes)` for each contiguous run (one innermost row) of the
/// block of shape `block_dims` at `offsets` inside a row-major array of shape `full_dims`.
fn for_each_run(full_dims: &[i64], block_dims: &[i64], offsets: &[i64], elem: usize, mut f: impl FnMut(usize, usize, usize)) {
    let rank = full_dims.len();
    if rank == 0 {
        f(0, 0, elem);
        return;
    }
    let mut strides = vec![1i64; rank];
    for i in (0..rank - 1).rev() {
        strides[i] = strides[i + 1] * full_dims[i + 1];
    }
    let run = block_dims[rank - 1] as usize * elem;
    let rows: i64 = block_dims[..rank - 1].iter().product();
    let mut idx = vec![0i64; rank - 1];
    for row in 0..rows as usize {
        let mut start = offsets[rank - 1];
        for d in 0..rank - 1 {
            start += (offsets[d] + idx[d]) * strides[d];
        }
        f(start as usize * elem, row * run, run);
        for d in (0..rank - 1).rev() {
            idx[d] += 1;
            if idx[d] < block_dims[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// One shard per partition (`mesh.num_devices()` of them), in partition order.
pub fn split(full: &[u8], dims: &[i64], dtype_size: usize, sharding: &Sharding, mesh: &Mesh) -> Vec<Vec<u8>> {
    let total: i64 = dims.iter().product();
    assert_eq!(full.len(), total as usize * dtype_size, "buffer of {} bytes for dims {dims:?}", full.len());
    let local = shard_dims(dims, sharding, mesh);
    let shard_bytes = local.iter().product::<i64>() as usize * dtype_size;
    (0..mesh.num_devices() as usize)
        .map(|p| {
            let mut shard = vec![0u8; shard_bytes];
            if shard_bytes > 0 {
                let offsets = shard_offsets(dims, sharding, mesh, p);
                for_each_run(dims, &local, &offsets, dtype_size, |src, dst, n| {
                    shard[dst..dst + n].copy_from_slice(&full[src..src + n])
                });
            }
            shard
        })
        .collect()
}

/// The whole array from one shard per partition (as [`split`] makes them).
pub fn assemble(shards: &[Vec<u8>], dims: &[i64], dtype_size: usize, sharding: &Sharding, mesh: &Mesh) -> Vec<u8> {
    let parts = mesh.num_devices() as usize;
    assert_eq!(shards.len(), parts, "{} shards for a mesh of {parts} devices", shards.len());
    let total: i64 = dims.iter().product();
    let local = shard_dims(dims, sharding, mesh);
    let shard_bytes = local.iter().product::<i64>() as usize * dtype_size;
    let mut full = vec![0u8; total as usize * dtype_size];
    if shard_bytes == 0 {
        return full;
    }
    // Only one replica of each shard needs copying: the partition with coordinate 0 on unnamed mesh axes.
    let named: Vec<bool> = mesh.axes.iter().map(|(n, _)| sharding.dims.iter().flatten().any(|a| a == n)).collect();
    for (p, shard) in shards.iter().enumerate() {
        let coords = partition_coords(mesh, p);
        if coords.iter().zip(&named).any(|(c, named)| !named && *c != 0) {
            continue;
        }
        assert_eq!(shard.len(), shard_bytes, "shard {p} has {} bytes, expected {shard_bytes}", shard.len());
        let offsets = shard_offsets(dims, sharding, mesh, p);
        for_each_run(dims, &local, &offsets, dtype_size, |dst, src, n| {
            full[dst..dst + n].copy_from_slice(&shard[src..src + n])
        });
    }
    full
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iota_bytes(n: usize) -> Vec<u8> {
        (0..n as u32).flat_map(|v| v.to_le_bytes()).collect()
    }

    fn as_u32(b: &[u8]) -> Vec<u32> {
        b.chunks(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect()
    }

    #[test]
    fn unique_shards_and_regions() {
        let m = Mesh::new(&[("data", 2), ("fsdp", 2)]);
        let s = Sharding::new(&[&["fsdp"], &[]]);
        assert_eq!(unique_shards(&[4, 2], &s, &m), vec![(vec![0, 0], vec![0, 2]), (vec![2, 0], vec![1, 3])]);
        let full = iota_bytes(8);
        let r = extract_region(&full, &[4, 2], &[1, 1], &[2, 1], 4);
        assert_eq!(as_u32(&r), vec![3, 5]);
        let mut back = vec![0u8; 32];
        place_region(&mut back, &[4, 2], &r, &[1, 1], &[2, 1], 4);
        assert_eq!(as_u32(&back), vec![0, 0, 0, 3, 0, 5, 0, 0]);
    }

    #[test]
    fn coords_are_row_major() {
        let m = Mesh::new(&[("data", 2), ("fsdp", 3)]);
        assert_eq!(partition_coords(&m, 0), vec![0, 0]);
        assert_eq!(partition_coords(&m, 1), vec![0, 1]);
        assert_eq!(partition_coords(&m, 4), vec![1, 1]);
    }

    #[test]
    fn split_rows_and_replicate_over_unused_axis() {
        // [4, 2] over fsdp=2 on a 2x2 (data, fsdp) mesh: rows split by fsdp, copied along data.
        let m = Mesh::new(&[("data", 2), ("fsdp", 2)]);
        let s = Sharding::new(&[&["fsdp"], &[]]);
        let full = iota_bytes(8);
        let shards = split(&full, &[4, 2], 4, &s, &m);
        assert_eq!(shard_dims(&[4, 2], &s, &m), vec![2, 2]);
        assert_eq!(as_u32(&shards[0]), vec![0, 1, 2, 3]);
        assert_eq!(as_u32(&shards[1]), vec![4, 5, 6, 7]);
        assert_eq!(as_u32(&shards[2]), vec![0, 1, 2, 3]);
        assert_eq!(as_u32(&shards[3]), vec![4, 5, 6, 7]);
        assert_eq!(assemble(&shards, &[4, 2], 4, &s, &m), full);
    }

    #[test]
    fn two_d_sharding_on_2d_mesh() {
        // [4, 6]: dim 0 over data=2, dim 1 over tensor=3.
        let m = Mesh::new(&[("data", 2), ("tensor", 3)]);
        let s = Sharding::new(&[&["data"], &["tensor"]]);
        let full = iota_bytes(24);
        let shards = split(&full, &[4, 6], 4, &s, &m);
        assert_eq!(as_u32(&shards[0]), vec![0, 1, 6, 7]);
        assert_eq!(as_u32(&shards[1]), vec![2, 3, 8, 9]);
        assert_eq!(as_u32(&shards[5]), vec![16, 17, 22, 23]);
        assert_eq!(assemble(&shards, &[4, 6], 4, &s, &m), full);
    }

    #[test]
    fn one_dim_over_two_mesh_axes() {
        // [8] over (data, fsdp) = 2x2, major to minor: partition (d, f) gets block d*2 + f.
        let m = Mesh::new(&[("data", 2), ("fsdp", 2)]);
        let s = Sharding::new(&[&["data", "fsdp"]]);
        let shards = split(&iota_bytes(8), &[8], 4, &s, &m);
        assert_eq!(as_u32(&shards[1]), vec![2, 3]);
        assert_eq!(as_u32(&shards[2]), vec![4, 5]);
        // Minor-to-major order the other way round: (fsdp, data) -> block f*2 + d.
        let s2 = Sharding::new(&[&["fsdp", "data"]]);
        let shards2 = split(&iota_bytes(8), &[8], 4, &s2, &m);
        assert_eq!(as_u32(&shards2[1]), vec![4, 5]);
        assert_eq!(as_u32(&shards2[2]), vec![2, 3]);
        assert_eq!(assemble(&shards2, &[8], 4, &s2, &m), iota_bytes(8));
    }

    #[test]
    fn three_d_inner_dim_and_scalars() {
        let m = Mesh::new(&[("fsdp", 2), ("tensor", 2)]);
        let s = Sharding::new(&[&[], &["fsdp"], &["tensor"]]);
        let full: Vec<u8> = (0..48u8).collect();
        let shards = split(&full, &[3, 4, 4], 1, &s, &m);
        assert_eq!(shards[3], vec![10, 11, 14, 15, 26, 27, 30, 31, 42, 43, 46, 47]);
        assert_eq!(assemble(&shards, &[3, 4, 4], 1, &s, &m), full);
        let scalar = split(&[7, 0], &[], 2, &Sharding::replicated(0), &m);
        assert_eq!(scalar, vec![vec![7, 0]; 4]);
    }
}
