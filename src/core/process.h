#pragma once
// Child processes for orchestration (`bitkd pipeline`, `bitkd experiment`):
// each one runs with its stdout and stderr appended to a log file, gets
// SIGTERM if this process dies, and is stopped when this process is
// interrupted (SIGINT, SIGTERM, SIGHUP).
#include <sys/types.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/status.h"

namespace bk {

// The environment of a child: this process's, with these names set (an empty
// value sets the name to "").
using ProcessEnv = std::map<std::string, std::string>;

// Starts argv[0] (a path) with stdout/stderr appended to log_path.
Status process_spawn(const std::vector<std::string>& argv, const ProcessEnv& env, const std::string& log_path,
                     pid_t* pid);
// Runs argv to completion (the command line is written to the log first).
// on_wait, when set, is called about every 0.2 s while it runs. Adds the
// child's CPU seconds (user + system) to *cpu_s. A non-zero exit or an
// interruption is an error naming the command.
Status process_run(const std::vector<std::string>& argv, const ProcessEnv& env, const std::string& log_path,
                   const std::function<void()>& on_wait, double* cpu_s);
// True once pid has ended (non-blocking); *status gets its wait status.
bool process_ended(pid_t pid, int* status);
// SIGTERM, then SIGKILL after grace_s; returns the child's CPU seconds.
double process_stop(pid_t pid, double grace_s);
std::string process_describe_exit(int wait_status);

// SIGINT/SIGTERM/SIGHUP set a flag (process_interrupted() returns the signal)
// and are forwarded to every child registered with process_track.
void process_install_interrupt_handlers();
int process_interrupted();
void process_track(pid_t pid);    // up to 8 at a time
void process_untrack(pid_t pid);

// A command line as a shell would read it (quoted where needed).
std::string shell_join(const std::vector<std::string>& argv);
// This executable's path (/proc/self/exe).
std::string self_exe_path();
void sleep_seconds(double s);

}  // namespace bk
