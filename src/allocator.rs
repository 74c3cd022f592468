//! The process's allocator: jemalloc, with transparent huge pages for its arenas and its own
//! metadata. The live dashboard's model (hundreds of threads' states and histograms) comes
//! back from memory after every pause between folds; on 4 KiB pages nearly every touch of it
//! also misses the TLB. At 512 vCPUs on 128 pCPUs, 1 M events/s (#15, `render_cpu`, which
//! includes this file so that it measures the binary's allocator), three rounds alternated
//! against glibc's malloc on a loaded host: the dashboard 18.5/17.6/17.5% of a core against
//! 20.6/19.5/20.0%, the fold in one batch 63 ns/event at best against 73. glibc's malloc
//! with `glibc.malloc.hugetlb=1` paid about as much, but a tunable is read from the
//! environment at exec, so the binary cannot set it itself; mimalloc 2.0 with large OS pages
//! paid nothing.

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, which it reads before `main` from this symbol (its `malloc_conf`,
/// prefixed as this build of jemalloc names its symbols); `_RJEM_MALLOC_CONF` in the
/// environment still overrides them. `thp:always` advises huge pages on every arena it
/// maps (the host's THP mode is usually `madvise`), `metadata_thp:always` on its own tables.
#[export_name = "_rjem_malloc_conf"]
static JEMALLOC_CONF: Option<&std::ffi::c_char> = Some(
    // SAFETY: a pointer to the first byte of a NUL-terminated string literal, which lives
    // as long as the program; jemalloc only reads it.
    unsafe { &*c"thp:always,metadata_thp:always".as_ptr() },
);
