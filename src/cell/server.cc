#include "cell/server.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "cell/size_prefixed.h"

namespace kc::cell {
namespace {

// A connection whose unsent replies exceed this stops being read until its
// peer catches up, so a peer that never reads cannot grow the cell's memory.
constexpr size_t kMaxPendingOutput = 1024 * 1024;
constexpr size_t kReadChunk = 64 * 1024;
// Requests taken from one connection before the others get a turn; the
// rest wait in the connection's input.
constexpr int kMaxRequestsPerTurn = 32;

// Each epoll entry carries an id whose low two bits give its kind.
enum EntryKind : uint64_t {
  kReadEntry = 0,
  kWriteEntry = 1,
  kWatcherEntry = 2,
  kTasksEntry = 3,
};
constexpr uint64_t kKindMask = 3;

uint64_t EntryData(uint64_t id, EntryKind kind) {
  return (id << 2) | kind;
}

}  // namespace

struct Server::Connection : std::enable_shared_from_this<Connection> {
  uint64_t id = 0;
  UniqueFd fd;
  // A second descriptor of the same socket, so that waiting for room to
  // write is an epoll entry of its own, independent of the read turn.
  UniqueFd write_fd;
  protocol::Framing framing = protocol::Framing::kPlain;
  std::shared_ptr<ConnectionContext> context;  // Daemon connections only.
  // Touched only by the worker that has the read turn.
  protocol::WipingBuffer input;
  bool peer_closed = false;

  std::mutex mutex;  // Guards everything below.
  protocol::WipingBuffer output;
  bool write_armed = false;
  // The read entry is disarmed because unsent replies reached the limit.
  bool parked = false;
  bool closed = false;
};

struct Server::Watcher {
  int fd = -1;
  std::function<void()> on_ready;
  // Locked while a worker runs |on_ready| and re-arms the entry. Only one
  // worker gets the armed entry, so the lock is never contended. It orders
  // one run's writes before the next run, because the one-shot re-arm
  // alone does not do that in the C++ memory model.
  std::mutex turn;
};

// A request to run on any worker, or a continuation of a read turn that
// stopped at kMaxRequestsPerTurn.
struct Server::Task {
  std::shared_ptr<Connection> connection;
  protocol::WipingBuffer frame;
  bool resume_reading = false;
};

Server::Server(Dispatcher &dispatcher) : dispatcher_(dispatcher) {}

Server::~Server() = default;

Status Server::Init() {
  epoll_.reset(epoll_create1(EPOLL_CLOEXEC));
  tasks_ready_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK | EFD_SEMAPHORE));
  if (!epoll_.valid() || !tasks_ready_.valid()) {
    return Status(
        Code::kInternal,
        std::string("cannot create the event set: ") + std::strerror(errno));
  }
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.u64 = EntryData(0, kTasksEntry);
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, tasks_ready_.get(), &event) != 0) {
    return Status(Code::kInternal,
                  std::string("epoll_ctl failed: ") + std::strerror(errno));
  }
  return Status::Ok();
}

size_t Server::connection_count() const {
  std::lock_guard lock(mutex_);
  return connections_.size();
}

std::shared_ptr<Server::Connection> Server::Find(uint64_t id) const {
  std::lock_guard lock(mutex_);
  auto it = connections_.find(id);
  return it == connections_.end() ? nullptr : it->second;
}

Status Server::AddConnection(UniqueFd fd, protocol::Framing framing,
                             std::shared_ptr<ConnectionContext> context) {
  int flags = fcntl(fd.get(), F_GETFL);
  if (flags < 0 || fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
    return Status(Code::kInternal,
                  std::string("fcntl failed: ") + std::strerror(errno));
  }
  auto connection = std::make_shared<Connection>();
  connection->write_fd.reset(fcntl(fd.get(), F_DUPFD_CLOEXEC, 0));
  if (!connection->write_fd.valid()) {
    return Status(Code::kInternal,
                  std::string("dup failed: ") + std::strerror(errno));
  }
  connection->fd = std::move(fd);
  connection->framing = framing;
  connection->context = std::move(context);
  {
    std::lock_guard lock(mutex_);
    connection->id = next_id_++;
    connections_.emplace(connection->id, connection);
  }
  epoll_event event{};
  event.events = EPOLLIN | EPOLLONESHOT;
  event.data.u64 = EntryData(connection->id, kReadEntry);
  epoll_event write_event{};
  // Armed when replies wait for room. One-shot from the start, because
  // epoll reports a hang-up even for an entry registered for no events.
  write_event.events = EPOLLONESHOT;
  write_event.data.u64 = EntryData(connection->id, kWriteEntry);
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, connection->write_fd.get(),
                &write_event) != 0 ||
      epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, connection->fd.get(), &event) !=
          0) {
    int error = errno;
    Close(connection);
    return Status(Code::kInternal,
                  std::string("epoll_ctl failed: ") + std::strerror(error));
  }
  return Status::Ok();
}

Status Server::Watch(int fd, std::function<void()> on_ready) {
  auto watcher = std::make_unique<Watcher>();
  watcher->fd = fd;
  watcher->on_ready = std::move(on_ready);
  uint64_t id;
  {
    std::lock_guard lock(mutex_);
    id = next_id_++;
    watchers_.emplace(id, std::move(watcher));
  }
  epoll_event event{};
  event.events = EPOLLIN | EPOLLONESHOT;
  event.data.u64 = EntryData(id, kWatcherEntry);
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &event) != 0) {
    int error = errno;
    std::lock_guard lock(mutex_);
    watchers_.erase(id);
    return Status(Code::kInternal,
                  std::string("epoll_ctl failed: ") + std::strerror(error));
  }
  return Status::Ok();
}

void Server::Run(unsigned workers, const std::function<void()> &started) {
  if (workers == 0) {
    workers = 1;
  }
  // Until |started| has run, the new threads wait here rather than serve.
  std::mutex start_mutex;
  std::unique_lock start_lock(start_mutex);
  for (unsigned i = 1; i < workers; ++i) {
    std::thread([this, &start_mutex] {
      { std::lock_guard wait(start_mutex); }
      WorkerLoop();
    }).detach();
  }
  if (started) {
    started();
  }
  start_lock.unlock();
  WorkerLoop();
  _exit(1);  // WorkerLoop does not return.
}

void Server::WorkerLoop() {
  for (;;) {
    epoll_event event;
    int n = epoll_wait(epoll_.get(), &event, 1, -1);
    if (n <= 0) {
      continue;  // EINTR.
    }
    uint64_t id = event.data.u64 >> 2;
    switch (static_cast<EntryKind>(event.data.u64 & kKindMask)) {
      case kTasksEntry: {
        uint64_t count;
        // In semaphore mode each read takes one task; EAGAIN means another
        // worker took it first.
        if (read(tasks_ready_.get(), &count, sizeof(count)) != sizeof(count)) {
          break;
        }
        std::unique_ptr<Task> task;
        {
          std::lock_guard lock(tasks_mutex_);
          task = std::move(tasks_.front());
          tasks_.pop_front();
        }
        RunTask(*task);
        break;
      }
      case kWatcherEntry: {
        Watcher *watcher;
        {
          std::lock_guard lock(mutex_);
          watcher = watchers_.at(id).get();
        }
        std::lock_guard turn(watcher->turn);
        watcher->on_ready();
        epoll_event rearm{};
        rearm.events = EPOLLIN | EPOLLONESHOT;
        rearm.data.u64 = event.data.u64;
        epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, watcher->fd, &rearm);
        break;
      }
      case kReadEntry:
        if (std::shared_ptr<Connection> connection = Find(id)) {
          {
            // The previous read turn re-armed this entry while it held the
            // mutex, so taking it here orders that turn's changes to the
            // input buffer before this turn reads it.
            std::lock_guard lock(connection->mutex);
          }
          ReadTurn(connection);
        }
        break;
      case kWriteEntry:
        if (std::shared_ptr<Connection> connection = Find(id)) {
          std::lock_guard lock(connection->mutex);
          connection->write_armed = false;
          protocol::WipingBuffer nothing;
          SendLocked(*connection, nothing);
        }
        break;
    }
  }
}

void Server::Queue(std::unique_ptr<Task> task) {
  {
    std::lock_guard lock(tasks_mutex_);
    tasks_.push_back(std::move(task));
  }
  uint64_t one = 1;
  (void)write(tasks_ready_.get(), &one, sizeof(one));
}

void Server::ReadTurn(const std::shared_ptr<Connection> &connection) {
  if (!ReadAvailable(*connection)) {
    Close(connection);
    return;
  }
  if (connection->framing == protocol::Framing::kSizePrefixed) {
    // neverbleed's callers expect replies in request order, so these
    // requests run here, one after another.
    if (!HandleSizePrefixed(*connection) || connection->peer_closed) {
      Close(connection);
      return;
    }
    std::lock_guard lock(connection->mutex);
    EndTurnLocked(*connection);
    return;
  }

  {
    std::lock_guard lock(connection->mutex);
    if (connection->output.size() >= kMaxPendingOutput) {
      // Replies pile up unread: leave the rest of the input until the write
      // side has sent enough, and it resumes reading.
      connection->parked = true;
      return;
    }
  }
  // The last request of the turn runs on this worker once the turn is
  // over, so a lone request needs no hand-over to another thread.
  std::unique_ptr<Task> last;
  for (int taken = 0; taken < kMaxRequestsPerTurn; ++taken) {
    protocol::Frame frame;
    protocol::SplitResult split =
        protocol::SplitFrame(connection->input.span(), frame);
    if (split == protocol::SplitResult::kNeedMore) {
      break;
    }
    if (split == protocol::SplitResult::kTooLarge) {
      protocol::WipingBuffer reply;
      dispatcher_.RejectOversized(reply, connection->context.get());
      {
        std::lock_guard lock(connection->mutex);
        SendLocked(*connection, reply);
      }
      Close(connection);
      return;
    }
    auto task = std::make_unique<Task>();
    task->connection = connection;
    task->frame.Append(frame.payload.data() - protocol::kHeaderSize,
                       frame.size());
    connection->input.Consume(frame.size());
    if (last != nullptr) {
      Queue(std::move(last));
    }
    last = std::move(task);
  }
  if (connection->peer_closed) {
    // The requests still run, and a key release among them still takes
    // effect; their replies have no reader.
    Close(connection);
  } else {
    ContinueOrEndTurn(connection);
  }
  if (last != nullptr) {
    RunTask(*last);
  }
}

void Server::ContinueOrEndTurn(const std::shared_ptr<Connection> &connection) {
  protocol::Frame next;
  if (protocol::SplitFrame(connection->input.span(), next) !=
      protocol::SplitResult::kNeedMore) {
    // More requests are buffered already. Keep the read turn and continue
    // after the requests just queued, so other connections go first.
    auto resume = std::make_unique<Task>();
    resume->connection = connection;
    resume->resume_reading = true;
    Queue(std::move(resume));
    return;
  }
  std::lock_guard lock(connection->mutex);
  EndTurnLocked(*connection);
}

void Server::RunTask(Task &task) {
  Connection &connection = *task.connection;
  if (task.resume_reading) {
    ReadTurn(task.connection);
    return;
  }
  protocol::Frame frame;
  if (protocol::SplitFrame(task.frame.span(), frame) !=
      protocol::SplitResult::kFrame) {
    // The frame was split once when the read turn queued it, so a failure
    // here is a broken invariant.
    std::abort();
  }
  protocol::WipingBuffer reply;
  Dispatcher::Outcome outcome =
      dispatcher_.Handle(frame, reply, connection.context.get());
  std::lock_guard lock(connection.mutex);
  if (connection.closed) {
    return;
  }
  SendLocked(connection, reply);
  if (outcome == Dispatcher::Outcome::kClose) {
    // The worker with the read turn, or the next one, reads end-of-file on
    // the shut-down socket and closes the connection.
    connection.closed = true;
    shutdown(connection.fd.get(), SHUT_RDWR);
  }
}

bool Server::HandleSizePrefixed(Connection &connection) {
  for (;;) {
    protocol::WipingBuffer reply;
    size_t consumed = 0;
    PrefixedStep step =
        HandleSizePrefixedRequest(dispatcher_, connection.input.span(),
                                  connection.context.get(), reply, consumed);
    if (step == PrefixedStep::kNeedMore) {
      return true;
    }
    connection.input.Consume(consumed);
    std::lock_guard lock(connection.mutex);
    SendLocked(connection, reply);
    if (step == PrefixedStep::kClose || connection.closed) {
      return false;
    }
  }
}

bool Server::ReadAvailable(Connection &connection) {
  // Bytes arrive in a stack chunk and are appended, so the input buffer
  // grows only by what the peer sent. A connection that sent a header and
  // stalled keeps a 16-byte buffer.
  uint8_t chunk[kReadChunk];
  // Read at most one frame's worth beyond what is buffered, so a flood of
  // requests is taken in step with the replies it produces.
  size_t limit = protocol::kHeaderSize + protocol::kMaxPayload;
  if (connection.framing == protocol::Framing::kSizePrefixed) {
    limit += sizeof(size_t);
  }
  while (connection.input.size() < limit) {
    ssize_t n = recv(connection.fd.get(), chunk, sizeof(chunk), 0);
    if (n > 0) {
      connection.input.Append(chunk, static_cast<size_t>(n));
      OPENSSL_cleanse(chunk, static_cast<size_t>(n));
      if (static_cast<size_t>(n) < sizeof(chunk)) {
        // The socket is drained for now; bytes that arrive later arm the
        // read entry again, so asking once more would only return EAGAIN.
        return true;
      }
      continue;
    }
    if (n == 0) {
      connection.peer_closed = true;
      return true;
    }
    if (errno == EINTR) {
      continue;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return true;
    }
    return false;
  }
  return true;
}

void Server::SendLocked(Connection &connection, protocol::WipingBuffer &reply) {
  if (connection.closed) {
    return;
  }
  connection.output.Append(reply.data(), reply.size());
  reply.Clear();
  size_t sent = 0;
  while (sent < connection.output.size()) {
    ssize_t n = send(connection.fd.get(), connection.output.data() + sent,
                     connection.output.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      break;
    }
    // The peer is gone. The read turn notices and closes the connection,
    // so a parked connection is resumed below.
    connection.output.Clear();
    sent = 0;
    break;
  }
  connection.output.Consume(sent);
  if (connection.output.size() != 0 && !connection.write_armed) {
    ArmLocked(connection, true);
  }
  if (connection.parked && connection.output.size() < kMaxPendingOutput) {
    // Requests may be buffered already, with no new bytes to wake the read
    // entry, so a task takes up the read turn.
    connection.parked = false;
    auto resume = std::make_unique<Task>();
    resume->connection = connection.shared_from_this();
    resume->resume_reading = true;
    Queue(std::move(resume));
  }
}

void Server::ArmLocked(Connection &connection, bool write) {
  epoll_event event{};
  if (write) {
    connection.write_armed = true;
    event.events = EPOLLOUT | EPOLLONESHOT;
    event.data.u64 = EntryData(connection.id, kWriteEntry);
    epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, connection.write_fd.get(), &event);
  } else {
    event.events = EPOLLIN | EPOLLONESHOT;
    event.data.u64 = EntryData(connection.id, kReadEntry);
    epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, connection.fd.get(), &event);
  }
}

void Server::EndTurnLocked(Connection &connection) {
  if (connection.output.size() >= kMaxPendingOutput) {
    // The write side resumes reading once the peer has caught up.
    connection.parked = true;
    return;
  }
  ArmLocked(connection, false);
}

void Server::Close(const std::shared_ptr<Connection> &connection) {
  {
    std::lock_guard lock(mutex_);
    if (connections_.erase(connection->id) == 0) {
      return;
    }
  }
  epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, connection->fd.get(), nullptr);
  epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, connection->write_fd.get(), nullptr);
  std::lock_guard lock(connection->mutex);
  connection->closed = true;
  connection->output.Clear();
}

}  // namespace kc::cell
