{
  "targets": [
    {
      "target_name": "vmforge_native",
      "sources": ["native/fileops.c", "native/mapread.c", "native/copychunks.c"],
      "cflags": ["-O2", "-Wall"]
    },
    {
      "target_name": "vmforge_zstd",
      "sources": ["native/zstd.c"],
      "cflags": ["-O2", "-Wall"]
    }
  ]
}
