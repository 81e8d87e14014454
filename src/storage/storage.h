#pragma once
// Artifacts on a remote store through rclone (S3, Google Drive, WebDAV, ...):
// the pipeline pulls the remote's files into the artifact root before its
// first stage and pushes new and changed files while a stage runs and when it
// ends. rclone runs as a child process (core/process), never through a shell.
//
// What is on the remote is always complete: a file is uploaded as
// <remote>/<path>.bitkd-partial, renamed into place (rclone moveto), then
// checked against the local file (size and hash; hashed by downloading where
// the backend keeps no hash). A failed push is retried, then reported with the
// file and the remote; the local file is never touched.
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "core/process.h"
#include "core/status.h"
#include "io/config.h"

namespace bk {

struct Storage {
  std::string backend = "local";  // "local" or "rclone"
  std::string setting;            // STORAGE_BACKEND as given (rclone, gdrive, s3, webdav, local)
  std::string remote;             // "<name>:<path>", no trailing '/'
  ProcessEnv env;                 // RCLONE_CONFIG_* for a remote built from S3_* / WEBDAV_*
  std::vector<std::string> secrets;  // values redacted from every message
  std::string rclone;             // the executable (empty until storage_open)
  std::string root;               // the local artifact root
  // Files known to be on the remote as they are locally: path under root -> (size, mtime ns).
  std::map<std::string, std::pair<int64_t, int64_t>> pushed;
  std::set<std::string> made_dirs;  // folders under root known to exist on the remote
  bool download_to_check = false;  // the backend keeps no hash rclone can compare (learned on the first push)
};

// The configuration's STORAGE_BACKEND / STORAGE_REMOTE / S3_* / WEBDAV_*
// mapped onto an rclone remote (no process is run). local, and gdrive without
// STORAGE_REMOTE (the PoC's mounted Drive folder), stay on the local disk.
Status storage_config(const Config& c, Storage* s);
// storage_config, then (for a remote) finds rclone and checks the remote can
// be listed and written; root is the local artifact root.
Status storage_open(const Config& c, const std::string& root, Storage* s);
// Copies the remote's files that are missing locally (a local file always wins).
Status storage_pull(Storage* s);
// Pushes every file under root that is new or changed since it was last
// pushed; while_running skips logs/ and writers' temp files (*.tmp.*).
Status storage_push_changed(Storage* s, bool while_running);
// One line for check-env: the backend, the remote and whether it answers.
std::string storage_describe(const Config& c);

// Secrets out of an rclone message: the given values, URL user info and
// key=value pairs whose key names a credential.
std::string storage_redact(const std::string& text, const std::vector<std::string>& secrets);

}  // namespace bk
