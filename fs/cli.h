/* SPDX-License-Identifier: MIT */
/* The subcommands other than mount, and helpers the mount daemon shares with them. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

int cli_umount(int argc, char **argv);
int cli_stats(int argc, char **argv);
int cli_fsck(int argc, char **argv);
int cli_gc(int argc, char **argv);
int cli_push(int argc, char **argv);
int cli_pull(int argc, char **argv);
int cli_remote(int argc, char **argv);
int cli_export(int argc, char **argv);
int cli_import(int argc, char **argv);

struct store;
struct remote;
struct vfs;
struct sync_report;
struct remote_options;
/* TLS files named on a command line (--ca-file or -o ca_file=, ...); NULL: not given. */
struct cli_tls {
	const char *ca_file, *client_cert, *client_key;
};
/*
 * Fill o's TLS files for url (NULL or "": the store's remote): those of tls when any is given,
 * else the store's recorded ones when url is the store's remote, else none. The strings stay
 * owned by tls and st.
 */
void cli_tls_options(const struct store *st, const char *url, const struct cli_tls *tls,
		     struct remote_options *o);
/* path made absolute into out (PATH_MAX bytes) for the TLS option called what: 0, or prints why
 * and returns -errno (it does not exist, ...). */
int cli_tls_path(const char *what, const char *path, char *out);
/* Record url with o's TLS files as the store's remote: 0; -EINVAL when a value is 1024 bytes or
 * more or holds whitespace (nothing printed); -errno from writing the config. */
int cli_record_remote(struct store *st, const char *url, const struct remote_options *o);
/* Open the remote at url, or the store's configured one when url is NULL or "", with the TLS
 * files of cli_tls_options (tls may be NULL), and check its config against the store (flags:
 * SYNC_REMOTE_*). Prints why on failure; -errno. */
int cli_open_remote(struct store *st, const char *url, const struct cli_tls *tls, unsigned flags,
		    struct remote **ret);
/* What to do about failure r of the remote at url (credentials refused, unreachable), or NULL. */
const char *cli_remote_hint(int r, const char *url);
/* Log (warn) that a remote catalog was left out, and why (a sync_options.bad_catalog). */
void cli_bad_catalog(void *data, const char *name, int err);
/* One line summing up a push, for the terminal and the log. */
void cli_format_push(const struct sync_report *rep, char *buf, size_t len);
/*
 * The daemon's remote thread: prefetch the files of prefetch[0..n) (taking ownership of the
 * array), push every interval_s seconds (0: never) and when `pkgcachefs push` asks (SIGUSR2).
 * With push false the mount is a read-only consumer of the remote (or has none: remote_url
 * NULL), and push requests are answered so. Stop it before the vfs closes; final_push pushes
 * once more, and when that fails, writes STORE/push-failed: the reason and what to change, for
 * `pkgcachefs umount`.
 */
int cli_rdaemon_start(struct vfs *v, const char *store, unsigned interval_s, bool push,
		      const char *remote_url, uint64_t *prefetch, size_t nprefetch);
int cli_rdaemon_stop(bool final_push);

/* The pull_interval of the next cli_rdaemon_start (default 60 s; 0: only on request). */
void cli_rdaemon_pull_interval(unsigned secs);

/* ---- live.c: the live merge and the kernel ---- */

struct fuse_session;
struct sync_options;
/* The session the kernel is told of changed names through; NULL once it goes. */
void live_set_session(struct fuse_session *se);
/* Tell the kernel that the attributes of ino changed behind its back (a request whose reply
 * carries none changed them); from any thread, with no lock held. */
void live_inval_attr(uint64_t ino);
/* vfs_pull, telling the kernel what changed; *ret_invals: names told. */
int live_pull(struct vfs *v, bool fetch_data, const struct sync_options *o, struct sync_report *rep,
	      uint64_t *ret_invals);
/* Count a merge (r < 0: a failed one) and rewrite STORE/merge-stats. */
void live_record(const char *store, int r, int64_t wall_ns, int64_t took_ns,
		 const struct sync_report *rep);

/* A progress line on stderr (data: the label), at most five times a second. */
void cli_show_progress(void *data, uint64_t done, uint64_t total);

/*
 * Start importing the tree open as underfd (a directory the mount now hides) into the mount at
 * mountpoint, then, once all of it is durable, remove the originals. The copy runs in a child,
 * whose pid is returned (or -errno); it exits 0 when everything was imported and synced, else an
 * errno.
 */
pid_t cli_adopt_start(int underfd, const char *mountpoint);

/* Record the daemon's exit status in the store, for `pkgcachefs umount` to report. */
void cli_write_exit_status(const char *store, int status);

struct gc_report;
/* The daemon's side of `pkgcachefs gc` on a mounted store: the requested size (0: none), and
 * the outcome, which the command waits for. */
int cli_read_gc_request(const char *store, uint64_t *ret_max);
void cli_write_gc_result(const char *store, int r, const struct gc_report *rep);

/* ---- cli_store.c: where a store is mounted, and why it cannot be opened ---- */

/* The mountpoint (into mnt, len bytes) of a pkgcachefs mount of store (the last one listed):
 * true when there is one. */
bool cli_store_mountpoint(const char *store, char *mnt, size_t len);
/* The store (into store, len bytes) of the pkgcachefs mount on mnt: true when there is one. */
bool cli_mount_store(const char *mnt, char *store, size_t len);
/* Whether a pkgcachefs mount sits exactly on path. */
bool cli_is_pkgcachefs_mount(const char *path);
/* Print why store_open(dir) failed with r (owner: the lock holder's pid), and what to do. */
void cli_store_error(const char *dir, int r, pid_t owner);
