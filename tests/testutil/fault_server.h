#pragma once
// A fault-injecting HTTP server for provider and collector tests (test-only,
// header-only, httplib). It listens on 127.0.0.1 on a free port. Each POST is
// answered by the next scripted action, else by `rule`, else PASS. PASS sends
// `canned_body`, or forwards the request to an upstream server (a real `bitkd
// serve`) when one is set, so faults can be injected in front of a real teacher.
// Nothing here sleeps on the clock: HANG waits on the server's own condition
// variable until release() (the client's timeout fires first).
#include <httplib.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace bk_test {

struct FaultAction {
  enum Kind { PASS, STATUS, DROP, MALFORMED, HANG } kind = PASS;
  int status = 200;
  std::string body;         // STATUS: the body sent
  std::string retry_after;  // STATUS: Retry-After header value ("" = none)

  static FaultAction pass() { return FaultAction{}; }
  static FaultAction error(int status, const std::string& body, const std::string& retry_after = "") {
    FaultAction a;
    a.kind = STATUS;
    a.status = status;
    a.body = body;
    a.retry_after = retry_after;
    return a;
  }
  static FaultAction drop() {
    FaultAction a;
    a.kind = DROP;
    return a;
  }
  static FaultAction malformed() {
    FaultAction a;
    a.kind = MALFORMED;
    return a;
  }
  static FaultAction hang() {
    FaultAction a;
    a.kind = HANG;
    return a;
  }
};

struct FaultServer {
  httplib::Server svr;
  std::thread th;
  int port = 0;

  std::mutex mu;
  std::condition_variable cv;
  std::deque<FaultAction> script;
  // Decides for requests beyond the script: (1-based POST number, request body).
  std::function<FaultAction(int, const std::string&)> rule;
  // Called with the 1-based POST number while the request counts as in flight
  // (under no lock); lets a test hold requests to observe concurrency.
  std::function<void(int)> gate;
  std::string canned_body;
  std::string models_body = R"({"object":"list","data":[{"id":"fault-model","object":"model"}]})";
  std::string upstream_host;
  int upstream_port = 0;

  int posts = 0;
  int in_flight = 0, max_in_flight = 0;
  bool released = false;
  std::vector<std::string> bodies, paths, auth_headers, api_key_headers;

  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port) + "/v1"; }

  void start() {
    svr.Post(R"(.*)", [this](const httplib::Request& req, httplib::Response& res) { handle_post(req, res); });
    svr.Get(R"(.*)", [this](const httplib::Request& req, httplib::Response& res) {
      if (upstream_port) {
        httplib::Client cli(upstream_host, upstream_port);
        auto r = cli.Get(req.path.c_str());
        if (r) {
          res.status = r->status;
          res.set_content(r->body, "application/json");
          return;
        }
      }
      res.set_content(models_body, "application/json");
    });
    port = svr.bind_to_any_port("127.0.0.1");
    th = std::thread([this] { svr.listen_after_bind(); });
    // stop() is a no-op until the accept loop runs; wait for it so a test
    // that ends at once does not leave the loop running (and join hanging).
    while (!svr.is_running()) std::this_thread::yield();
  }

  void release() {
    {
      std::lock_guard<std::mutex> lk(mu);
      released = true;
    }
    cv.notify_all();
  }

  void stop() {
    release();
    svr.stop();
    if (th.joinable()) th.join();
  }

  ~FaultServer() { stop(); }

  int post_count() {
    std::lock_guard<std::mutex> lk(mu);
    return posts;
  }

 private:
  void handle_post(const httplib::Request& req, httplib::Response& res) {
    FaultAction act;
    int n;
    {
      std::lock_guard<std::mutex> lk(mu);
      n = ++posts;
      in_flight++;
      if (in_flight > max_in_flight) max_in_flight = in_flight;
      bodies.push_back(req.body);
      paths.push_back(req.path);
      auth_headers.push_back(req.get_header_value("Authorization"));
      api_key_headers.push_back(req.get_header_value("x-api-key") + req.get_header_value("x-goog-api-key"));
      if (!script.empty()) {
        act = script.front();
        script.pop_front();
      } else if (rule) {
        act = rule(n, req.body);
      }
    }
    if (gate) gate(n);
    switch (act.kind) {
      case FaultAction::PASS:
        if (upstream_port) {
          httplib::Client cli(upstream_host, upstream_port);
          cli.set_read_timeout(120, 0);
          auto r = cli.Post(req.path.c_str(), req.body, "application/json");
          if (r) {
            res.status = r->status;
            res.set_content(r->body, "application/json");
          } else {
            res.status = 502;
            res.set_content(R"({"error":{"message":"upstream unreachable"}})", "application/json");
          }
        } else {
          res.set_content(canned_body, "application/json");
        }
        break;
      case FaultAction::STATUS:
        res.status = act.status;
        if (!act.retry_after.empty()) res.set_header("Retry-After", act.retry_after);
        res.set_content(act.body, "application/json");
        break;
      case FaultAction::MALFORMED:
        res.set_content(R"({"id":"x","choices":[{"message":{"content":"trunc)", "application/json");
        break;
      case FaultAction::DROP:
        // Headers promise 4096 bytes, then the provider fails: httplib closes
        // the connection mid-response, as a crashed upstream would.
        res.set_content_provider(4096, "application/json",
                                 [](size_t, size_t, httplib::DataSink&) { return false; });
        break;
      case FaultAction::HANG: {
        std::unique_lock<std::mutex> lk(mu);
        cv.wait(lk, [this] { return released; });
        res.set_content(canned_body, "application/json");
        break;
      }
    }
    std::lock_guard<std::mutex> lk(mu);
    in_flight--;
  }
};

}  // namespace bk_test
