// Package squashfs writes a filetree.Tree as a squashfs 4.0 image, the
// read-only system partition of a ballast image.
//
// # Why our own writer
//
// The design names github.com/diskfs/go-diskfs for squashfs. Its writer
// (v1.9.4) builds the image from a staging directory on the host: it reads
// owners, modes, device numbers and timestamps back from the host file
// system, so a tree would first have to be copied out to disk, chown'ed and
// mknod'ed (root needed for owners and device nodes), and then read again.
// It also stamps the superblock with time.Now(), so two builds of the same
// tree never give the same bytes, and it compresses on one goroutine. The
// format itself is small and well documented (the kernel's
// fs/squashfs/squashfs_fs.h is the reference), so this package writes it
// directly from the tree: no staging copy, no root, every field taken from
// the tree (the tree's ModTime on every inode and in the superblock), data
// blocks compressed in parallel but written in a fixed order, so the same
// tree always gives the same bytes. go-diskfs's reader and Debian's
// unsquashfs are used in the tests to read the result back.
//
// # Layout
//
// The image follows the order mksquashfs uses and the Linux kernel checks
// when it mounts: superblock, data blocks and fragment blocks, inode table,
// directory table, fragment table, id table. There is no export (NFS) table
// and no xattr table. Tail ends of files (and whole small files) are packed
// into fragment blocks. Hard links share one inode. The image is padded to a
// multiple of 4 KiB, as block devices want.
//
// Caching: Digest hashes everything Write reads (metadata and the identity
// of every file's contents) together with the options and the writer's own
// format version, so a pipeline can keep images keyed by digest and skip
// Write when nothing changed.
package squashfs
