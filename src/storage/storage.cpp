#include "storage/storage.h"

#include <algorithm>
#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/fs.h"
#include "core/log.h"

extern char** environ;

namespace bk {

namespace {

constexpr int k_tries = 3;                         // attempts for one push before it is reported
constexpr const char* k_partial = ".bitkd-partial";  // suffix of an upload in progress, never pulled
constexpr const char* k_install = "apt-get install rclone (or: bash scripts/setup.sh --test)";

bool starts_with(const std::string& s, const char* p) { return s.rfind(p, 0) == 0; }
bool ends_with(const std::string& s, const char* p) {
  size_t n = strlen(p);
  return s.size() >= n && s.compare(s.size() - n, n, p) == 0;
}

// rclone keeps credentials in these keys of a remote (RCLONE_CONFIG_<NAME>_<KEY>).
bool rclone_key_is_secret(const std::string& name) {
  return ends_with(name, "_PASS") || ends_with(name, "_PASSWORD") || ends_with(name, "_KEY") ||
         ends_with(name, "_KEY_ID") || ends_with(name, "_TOKEN") || ends_with(name, "_SECRET") ||
         name.find("SECRET") != std::string::npos;
}

// A remote built from the PoC's variables: rclone reads it from the child's
// environment, so no secret is ever on a command line.
Status remote_from_s3(const Config& c, Storage* s) {
  const std::string bucket = config_str(c, "S3_BUCKET");
  if (bucket.empty())
    return errorf("STORAGE_BACKEND=s3 needs S3_BUCKET (and S3_ENDPOINT_URL, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY "
                  "unless the AWS defaults apply), or STORAGE_REMOTE=<remote>:<bucket>/<path> naming an rclone S3 remote");
  const std::string prefix = config_str(c, "S3_PREFIX", "bitkd");
  s->remote = "bitkd_s3:" + bucket + "/" + prefix;
  s->env["RCLONE_CONFIG_BITKD_S3_TYPE"] = "s3";
  s->env["RCLONE_CONFIG_BITKD_S3_PROVIDER"] = config_str(c, "S3_PROVIDER", "Other");
  const std::string endpoint = config_str(c, "S3_ENDPOINT_URL"), region = config_str(c, "S3_REGION");
  if (!endpoint.empty()) s->env["RCLONE_CONFIG_BITKD_S3_ENDPOINT"] = endpoint;
  if (!region.empty()) s->env["RCLONE_CONFIG_BITKD_S3_REGION"] = region;
  const std::string id = config_str(c, "S3_ACCESS_KEY_ID"), key = config_str(c, "S3_SECRET_ACCESS_KEY");
  if (id.empty() != key.empty())
    return errorf("S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY go together: set both, or neither (then rclone uses "
                  "the AWS environment or instance credentials)");
  if (id.empty()) {
    s->env["RCLONE_CONFIG_BITKD_S3_ENV_AUTH"] = "true";
  } else {
    s->env["RCLONE_CONFIG_BITKD_S3_ACCESS_KEY_ID"] = id;
    s->env["RCLONE_CONFIG_BITKD_S3_SECRET_ACCESS_KEY"] = key;
    s->secrets.push_back(id);
    s->secrets.push_back(key);
  }
  return ok_status();
}

Status remote_from_webdav(const Config& c, Storage* s) {
  // rclone stores WebDAV passwords obscured (`rclone obscure`); a plain one
  // handed over would be refused by it, so say what to set instead.
  if (config_has(c, "WEBDAV_PASSWORD"))
    return errorf("WEBDAV_PASSWORD is not used: rclone wants the password obscured. Set "
                  "RCLONE_CONFIG_MYDAV_TYPE=webdav, RCLONE_CONFIG_MYDAV_URL=<url>, RCLONE_CONFIG_MYDAV_USER=<user>, "
                  "RCLONE_CONFIG_MYDAV_PASS=\"$(rclone obscure -)\" (reads the password from stdin) and "
                  "STORAGE_REMOTE=mydav:<path> (or configure a remote with `rclone config`)");
  const std::string url = config_str(c, "WEBDAV_URL");
  if (url.empty())
    return errorf("STORAGE_BACKEND=webdav needs WEBDAV_URL, or STORAGE_REMOTE=<remote>:<path> naming an rclone "
                  "WebDAV remote");
  s->remote = "bitkd_webdav:" + config_str(c, "WEBDAV_PATH", "bitkd");
  s->env["RCLONE_CONFIG_BITKD_WEBDAV_TYPE"] = "webdav";
  s->env["RCLONE_CONFIG_BITKD_WEBDAV_URL"] = url;
  const std::string user = config_str(c, "WEBDAV_USER");
  if (!user.empty()) s->env["RCLONE_CONFIG_BITKD_WEBDAV_USER"] = user;
  return ok_status();
}

// `<name>:<path>` with a plain remote name: a connection string
// (":s3,key=...:path") would put credentials on the command line.
Status check_remote_spec(const std::string& r) {
  size_t colon = r.find(':');
  bool ok = colon != std::string::npos && colon > 0;
  for (size_t i = 0; ok && i < colon; i++)
    ok = isalnum((unsigned char)r[i]) || r[i] == '_' || r[i] == '-' || r[i] == '.';
  if (!ok)
    return errorf("STORAGE_REMOTE=%s is not <remote>:<path> with a remote named in rclone's config file or in "
                  "RCLONE_CONFIG_<NAME>_TYPE (and its other keys) in the environment",
                  r.c_str());
  return ok_status();
}

std::string temp_name(const char* what) {
  static int counter = 0;
  const char* dir = getenv("TMPDIR");
  return std::string(dir && *dir ? dir : "/tmp") + "/bitkd-rclone-" + std::to_string(getpid()) + "-" +
         std::to_string(counter++) + "." + what;
}

std::string read_and_remove(const std::string& path) {
  std::string text;
  if (!read_file(path, &text).ok()) text.clear();
  unlink(path.c_str());
  return text;
}

// The last few lines of rclone's log that say what went wrong.
std::string error_lines(const std::string& log) {
  std::vector<std::string> lines;
  size_t a = 0;
  while (a < log.size()) {
    size_t b = log.find('\n', a);
    if (b == std::string::npos) b = log.size();
    std::string line = log.substr(a, b - a);
    if (line.find("ERROR") != std::string::npos || line.find("Failed") != std::string::npos ||
        line.find("CRITICAL") != std::string::npos)
      lines.push_back(line);
    a = b + 1;
  }
  std::string out;
  for (size_t i = lines.size() > 2 ? lines.size() - 2 : 0; i < lines.size(); i++) out += (out.empty() ? "" : "; ") + lines[i];
  return out.empty() ? "no message from rclone" : out;
}

struct RcloneResult {
  int exit_code = -1;
  std::string out, log;
};

// Runs `rclone <args>` to completion: stdout in r->out, its log in r->log.
Status rclone_run(const Storage& s, std::vector<std::string> args, RcloneResult* r) {
  const std::string out_path = temp_name("out"), log_path = temp_name("log");
  std::vector<std::string> argv = {s.rclone};
  argv.insert(argv.end(), args.begin(), args.end());
  // One try per call at this level: the retries that report are ours.
  for (const char* f : {"--retries", "1", "--low-level-retries", "3", "--contimeout", "15s", "--timeout", "60s",
                        "--log-file"})
    argv.push_back(f);
  argv.push_back(log_path);
  pid_t pid = 0;
  BK_TRY(process_spawn(argv, s.env, out_path, &pid));
  int ws = 0;
  while (!process_ended(pid, &ws)) sleep_seconds(0.01);
  r->exit_code = WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
  r->out = read_and_remove(out_path);
  r->log = read_and_remove(log_path);
  return ok_status();
}

// rclone <args>, an error naming what it did when it fails.
Status rclone_do(const Storage& s, const std::vector<std::string>& args, const std::string& what, RcloneResult* r) {
  BK_TRY(rclone_run(s, args, r));
  if (r->exit_code == 0) return ok_status();
  return errorf("%s: rclone %s exited with %d: %s", what.c_str(), args[0].c_str(), r->exit_code,
                storage_redact(error_lines(r->log + r->out), s.secrets).c_str());
}

std::string find_rclone() {
  const char* path = getenv("PATH");
  std::string p = path ? path : "/usr/bin:/bin";
  size_t a = 0;
  while (a <= p.size()) {
    size_t b = p.find(':', a);
    if (b == std::string::npos) b = p.size();
    std::string cand = path_join(b > a ? p.substr(a, b - a) : ".", "rclone");
    if (access(cand.c_str(), X_OK) == 0) return cand;
    a = b + 1;
  }
  return "";
}

std::string remote_path(const Storage& s, const std::string& rel) {
  return s.remote + (ends_with(s.remote, ":") || rel.empty() ? "" : "/") + rel;
}

void walk(const std::string& dir, const std::string& rel, std::vector<std::string>* out) {
  DIR* d = opendir(dir.c_str());
  if (!d) return;
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n == "." || n == ".." || n.find('\n') != std::string::npos) continue;
    std::string full = path_join(dir, n), r = rel.empty() ? n : rel + "/" + n;
    struct stat st;
    if (lstat(full.c_str(), &st) != 0) continue;
    if (S_ISDIR(st.st_mode)) walk(full, r, out);
    else if (S_ISREG(st.st_mode)) out->push_back(r);
  }
  closedir(d);
}

std::pair<int64_t, int64_t> stat_key(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return {-1, -1};
  return {(int64_t)st.st_size, (int64_t)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec};
}

// Files on the remote: path -> size.
Status remote_listing(const Storage& s, std::map<std::string, int64_t>* out) {
  RcloneResult r;
  BK_TRY(rclone_do(s, {"lsjson", "-R", "--files-only", "--exclude", std::string("*") + k_partial, s.remote},
                   "listing " + s.remote, &r));
  nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
  if (!j.is_array()) return errorf("listing %s: rclone lsjson did not print a JSON list", s.remote.c_str());
  for (const auto& e : j)
    if (e.contains("Path") && e.contains("Size")) (*out)[e["Path"].get<std::string>()] = e["Size"].get<int64_t>();
  return ok_status();
}

// One attempt at putting these files on the remote: upload beside, rename
// into place, compare with the local files. A file removed here since it was
// listed (an old checkpoint the trainer rotated out) is skipped, not an error.
Status push_once(Storage* s, const std::vector<std::string>& files) {
  RcloneResult r;
  Status st = ok_status();
  std::vector<std::string> sent;
  for (size_t i = 0; st.ok() && i < files.size(); i++) {
    const std::string local = path_join(s->root, files[i]);
    if (stat_key(local).first < 0) continue;
    const std::string dest = remote_path(*s, files[i]), part = dest + k_partial;
    // rclone's copyto to WebDAV does not make a missing folder: make it first.
    const size_t slash = files[i].rfind('/');
    const std::string dir = slash == std::string::npos ? "" : files[i].substr(0, slash);
    if (!dir.empty() && !s->made_dirs.count(dir)) {
      st = rclone_do(*s, {"mkdir", remote_path(*s, dir)}, "making " + remote_path(*s, dir), &r);
      if (st.ok()) s->made_dirs.insert(dir);
    }
    if (st.ok()) st = rclone_do(*s, {"copyto", "--ignore-times", local, part}, "uploading " + files[i] + " to " + part, &r);
    if (!st.ok() && stat_key(local).first < 0) {  // removed while it was being uploaded
      (void)rclone_run(*s, {"deletefile", part}, &r);
      st = ok_status();
      continue;
    }
    // --ignore-times: a rewrite of the same size within the backend's modtime
    // precision would otherwise count as identical and be left unmoved.
    if (st.ok()) st = rclone_do(*s, {"moveto", "--ignore-times", part, dest}, "renaming " + part + " into place", &r);
    if (st.ok()) sent.push_back(files[i]);
  }
  if (!st.ok() || sent.empty()) return st;
  const std::string list = temp_name("list");
  std::string text;
  for (const std::string& f : sent) text += f + "\n";
  BK_TRY(write_file_atomic(list, text));
  if (st.ok()) {
    // Hashes where the backend keeps them; otherwise rclone hashes a download.
    if (!s->download_to_check) {
      st = rclone_run(*s, {"check", "--one-way", "--files-from", list, s->root, s->remote}, &r);
      if (st.ok() && r.exit_code == 0 && r.log.find("No common hash") != std::string::npos) s->download_to_check = true;
      else if (st.ok() && r.exit_code != 0)
        st = errorf("checking what was written to %s: rclone check found differences: %s", s->remote.c_str(),
                    storage_redact(error_lines(r.log), s->secrets).c_str());
    }
    if (st.ok() && s->download_to_check)
      st = rclone_do(*s, {"check", "--one-way", "--download", "--files-from", list, s->root, s->remote},
                     "checking what was written to " + s->remote, &r);
  }
  unlink(list.c_str());
  return st;
}

}  // namespace

std::string storage_redact(const std::string& text, const std::vector<std::string>& secrets) {
  std::string t = text;
  for (const std::string& v : secrets) {
    if (v.size() < 4) continue;  // too short to tell from ordinary text
    for (size_t p = t.find(v); p != std::string::npos; p = t.find(v, p + 4)) t.replace(p, v.size(), "****");
  }
  // scheme://user:password@host -> scheme://****@host
  for (size_t p = t.find("://"); p != std::string::npos; p = t.find("://", p + 3)) {
    size_t end = t.find_first_of("/ \t\n\"'", p + 3), at = t.find('@', p + 3);
    if (at != std::string::npos && at < end) t.replace(p + 3, at - (p + 3), "****");
  }
  // key=value (query strings, headers) where the key names a credential
  static const char* const k_words[] = {"token", "secret", "password", "pass", "signature", "key", "credential", "auth"};
  for (size_t p = t.find('='); p != std::string::npos; p = t.find('=', p + 1)) {
    size_t k = p;
    while (k > 0 && (isalnum((unsigned char)t[k - 1]) || t[k - 1] == '_' || t[k - 1] == '-')) k--;
    std::string key = t.substr(k, p - k);
    for (char& ch : key) ch = (char)tolower((unsigned char)ch);
    bool secret = false;
    for (const char* w : k_words) secret = secret || key.find(w) != std::string::npos;
    if (!secret) continue;
    size_t end = t.find_first_of("& \t\n\"',;", p + 1);
    if (end == std::string::npos) end = t.size();
    t.replace(p + 1, end - (p + 1), "****");
  }
  return t;
}

Status storage_config(const Config& c, Storage* s) {
  *s = Storage();
  s->setting = config_str(c, "STORAGE_BACKEND", "local");
  const std::string remote = config_str(c, "STORAGE_REMOTE");
  for (char** e = environ; e && *e; e++) {
    const char* eq = strchr(*e, '=');
    if (!eq) continue;
    std::string name(*e, eq - *e);
    if (starts_with(name, "RCLONE_CONFIG_") && rclone_key_is_secret(name) && eq[1]) s->secrets.push_back(eq + 1);
  }
  if (s->setting == "local" || (s->setting == "gdrive" && remote.empty())) {
    if (!remote.empty())
      return errorf("STORAGE_REMOTE=%s is set but STORAGE_BACKEND=local: set STORAGE_BACKEND=rclone to use it",
                    remote.c_str());
    return ok_status();
  }
  s->backend = "rclone";
  if (!remote.empty()) {
    BK_TRY(check_remote_spec(remote));
    s->remote = remote;
  } else if (s->setting == "s3") {
    BK_TRY(remote_from_s3(c, s));
  } else if (s->setting == "webdav") {
    BK_TRY(remote_from_webdav(c, s));
  } else if (s->setting == "rclone") {
    return errorf("STORAGE_BACKEND=rclone needs STORAGE_REMOTE=<remote>:<path> (a remote from rclone's config file "
                  "or from RCLONE_CONFIG_<NAME>_* variables)");
  } else {
    return errorf("STORAGE_BACKEND=%s is not known: use local, rclone (with STORAGE_REMOTE), gdrive, s3 or webdav",
                  s->setting.c_str());
  }
  while (s->remote.size() > 1 && ends_with(s->remote, "/")) s->remote.pop_back();
  return ok_status();
}

Status storage_open(const Config& c, const std::string& root, Storage* s) {
  BK_TRY(storage_config(c, s));
  s->root = root;
  if (s->backend == "local") return ok_status();
  s->rclone = find_rclone();
  if (s->rclone.empty())
    return errorf("STORAGE_BACKEND=%s needs rclone, which is not on PATH: %s", s->setting.c_str(), k_install);
  RcloneResult r;
  BK_TRY(rclone_do(*s, {"mkdir", s->remote}, "remote " + s->remote + " is not reachable or not writable", &r));
  std::map<std::string, int64_t> files;
  return with_context(remote_listing(*s, &files), "remote " + s->remote + " is not reachable");
}

Status storage_pull(Storage* s) {
  if (s->backend == "local") return ok_status();
  RcloneResult r;
  BK_TRY(rclone_do(*s, {"copy", "--ignore-existing", "--exclude", std::string("*") + k_partial, s->remote, s->root},
                   "pulling " + s->remote + " into " + s->root, &r));
  // What is now here as it is there needs no push.
  std::map<std::string, int64_t> files;
  BK_TRY(remote_listing(*s, &files));
  for (auto& f : files) {
    auto key = stat_key(path_join(s->root, f.first));
    if (key.first == f.second) s->pushed[f.first] = key;
  }
  return ok_status();
}

Status storage_push_changed(Storage* s, bool while_running) {
  if (s->backend == "local") return ok_status();
  std::vector<std::string> all, todo;
  walk(s->root, "", &all);
  std::map<std::string, std::pair<int64_t, int64_t>> keys;
  for (const std::string& f : all) {
    if (while_running && (starts_with(f, "logs/") || f.find(".tmp.") != std::string::npos)) continue;
    auto key = stat_key(path_join(s->root, f));
    auto it = s->pushed.find(f);
    if (key.first < 0 || (it != s->pushed.end() && it->second == key)) continue;
    todo.push_back(f);
    keys[f] = key;
  }
  if (todo.empty()) return ok_status();
  // Oldest first, the order they were written: a checkpoint's optimizer state
  // reaches the remote before its model file, so a run killed mid-push never
  // leaves a model file there that cannot be resumed from.
  std::stable_sort(todo.begin(), todo.end(),
                   [&](const std::string& x, const std::string& y) { return keys[x].second < keys[y].second; });
  Status st = ok_status();
  for (int attempt = 1; attempt <= k_tries; attempt++) {
    st = push_once(s, todo);
    if (st.ok()) break;
    BK_LOG_WARN("storage: push to %s failed (try %d of %d): %s", s->remote.c_str(), attempt, k_tries, st.msg.c_str());
    if (attempt < k_tries) sleep_seconds(attempt);
  }
  if (!st.ok())
    return errorf("storage: pushing %s%s to %s failed after %d tries (%s); the local files are kept in %s: rerun "
                  "when the remote answers again and they are pushed then",
                  todo[0].c_str(), todo.size() > 1 ? (" and " + std::to_string(todo.size() - 1) + " more").c_str() : "",
                  s->remote.c_str(), k_tries, st.msg.c_str(), s->root.c_str());
  for (const std::string& f : todo) s->pushed[f] = keys[f];
  return ok_status();
}

std::string storage_describe(const Config& c) {
  Storage s;
  Status st = storage_config(c, &s);
  if (!st.ok()) return "storage: " + st.msg;
  if (s.backend == "local")
    return "storage: " + s.setting + " (artifacts on this machine's disk" +
           (s.setting == "gdrive" ? ", a mounted Drive folder: set STORAGE_REMOTE to use rclone" : "") + ")";
  st = storage_open(c, ".", &s);
  return "storage: " + (s.setting == "rclone" ? std::string() : s.setting + " via ") + "rclone remote " + s.remote + ": " +
         (st.ok() ? "reachable" : "NOT reachable: " + st.msg);
}

}  // namespace bk
