// The cell's connection loop: a pool of worker threads sharing one epoll
// set. Each connection is armed one-shot, so one worker at a time reads it.
// The requests it reads go to a shared queue that every worker takes from,
// so pipelined requests of one connection run in parallel and a slow one
// delays no other. Replies go out in the order the requests finish.
#ifndef KEYCELL_CELL_SERVER_H
#define KEYCELL_CELL_SERVER_H

#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "base/status.h"
#include "base/unique_fd.h"
#include "cell/dispatcher.h"

namespace kc::cell {

class Server {
 public:
  explicit Server(Dispatcher &dispatcher);
  Server(const Server &) = delete;
  Server &operator=(const Server &) = delete;
  ~Server();

  Status Init();

  // Serves requests arriving on the stream socket |fd|, whose frames are
  // delimited as |framing| specifies. A daemon passes the connection's
  // |context|, which the dispatcher receives with each request.
  Status AddConnection(UniqueFd fd,
                       protocol::Framing framing = protocol::Framing::kPlain,
                       std::shared_ptr<ConnectionContext> context = nullptr);

  // Calls |on_ready| on a worker whenever |fd| is readable or hung up; it
  // runs on one worker at a time. |fd| stays owned by the caller.
  Status Watch(int fd, std::function<void()> on_ready);

  // Runs |workers| threads, the caller's included, forever. |started|, if
  // set, runs once every worker thread exists and before any request is
  // served; it exits the process if it fails.
  [[noreturn]] void Run(unsigned workers,
                        const std::function<void()> &started = nullptr);

  size_t connection_count() const;

 private:
  struct Connection;
  struct Watcher;
  struct Task;

  void WorkerLoop();
  // Reads |connection| and queues its complete requests. Runs with the
  // connection's read turn, which one worker has at a time.
  void ReadTurn(const std::shared_ptr<Connection> &connection);
  // Queues a continuation of the read turn when complete requests are
  // still buffered, and otherwise ends the turn.
  void ContinueOrEndTurn(const std::shared_ptr<Connection> &connection);
  // Handles the size-prefixed requests in the input in order. Returns false
  // when the connection must close.
  bool HandleSizePrefixed(Connection &connection);
  bool ReadAvailable(Connection &connection);
  void RunTask(Task &task);
  void Queue(std::unique_ptr<Task> task);
  // Appends |reply| to the connection's output and sends what the socket
  // takes. Requires the connection's mutex.
  void SendLocked(Connection &connection, protocol::WipingBuffer &reply);
  // Gives up the read turn and arms the connection for reading again,
  // unless unsent replies have reached the limit. Requires the mutex.
  void EndTurnLocked(Connection &connection);
  void ArmLocked(Connection &connection, bool write);
  void Close(const std::shared_ptr<Connection> &connection);
  std::shared_ptr<Connection> Find(uint64_t id) const;

  Dispatcher &dispatcher_;
  UniqueFd epoll_;
  UniqueFd tasks_ready_;  // eventfd in semaphore mode, one count per task.
  std::mutex tasks_mutex_;
  std::deque<std::unique_ptr<Task>> tasks_;
  mutable std::mutex mutex_;
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, std::shared_ptr<Connection>> connections_;
  std::unordered_map<uint64_t, std::unique_ptr<Watcher>> watchers_;
};

}  // namespace kc::cell

#endif  // KEYCELL_CELL_SERVER_H
