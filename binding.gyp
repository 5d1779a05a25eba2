{
  "targets": [
    {
      "target_name": "vmforge_native",
      "sources": ["native/fileops.c"],
      "cflags": ["-O2", "-Wall"]
    }
  ]
}
