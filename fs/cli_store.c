/* SPDX-License-Identifier: MIT */
/*
 * What the subcommands and the daemon share about a store as a whole: where it is mounted (from
 * /proc/self/mountinfo, the kernel's own record, so a dead daemon's mount is still found), and
 * the one message for each reason a store cannot be opened. It depends on nothing else in fs/,
 * so cli.c, remote_cli.c and report.c all build on it without needing each other.
 */
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "store.h"

/*
 * Find a pkgcachefs mount in mountinfo: the one whose store (by_store) or mountpoint is want;
 * the other of the two goes into out (len bytes). Of several matches the last one listed wins.
 * The kernel lists paths with spaces octal-escaped, and they compare as listed.
 */
static bool find_mount(const char *want, bool by_store, char *out, size_t len)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[8192];
	bool found = false;

	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		char mp[4096], fstype[256], source[4096];
		char *sep = strstr(line, " - ");

		if (!sep || sscanf(line, "%*s %*s %*s %*s %4095s", mp) != 1)
			continue;
		if (sscanf(sep + 3, "%255s %4095s", fstype, source) != 2)
			continue;
		if (strcmp(fstype, "fuse.pkgcachefs") || strcmp(by_store ? source : mp, want))
			continue;
		snprintf(out, len, "%s", by_store ? mp : source);
		found = true;
	}
	fclose(f);
	return found;
}

bool cli_mount_store(const char *mnt, char *store, size_t len)
{
	return find_mount(mnt, false, store, len);
}

bool cli_store_mountpoint(const char *store, char *mnt, size_t len)
{
	return find_mount(store, true, mnt, len);
}

bool cli_is_pkgcachefs_mount(const char *path)
{
	char store[4096];

	return cli_mount_store(path, store, sizeof(store));
}

void cli_store_error(const char *dir, int r, pid_t owner)
{
	char mnt[4096], why[PATH_MAX + 128];

	if (r == -EBUSY && cli_store_mountpoint(dir, mnt, sizeof(mnt)))
		fprintf(stderr,
			"pkgcachefs: store %s is mounted on %s (daemon pid %d): unmount it first "
			"(pkgcachefs umount %s)\n",
			dir, mnt, (int)owner, mnt);
	else if (r == -EBUSY)
		fprintf(stderr,
			"pkgcachefs: store %s is locked by another pkgcachefs process (pid %d): "
			"wait "
			"for it to finish, or stop it\n",
			dir, (int)owner);
	else if (r == -ENOENT)
		fprintf(stderr,
			"pkgcachefs: no store at %s: check --store (or $PKGCACHEFS_STORE); "
			"`pkgcachefs mount --store %s MOUNTPOINT` creates one\n",
			dir, dir);
	else if (r == -EPROTO)
		fprintf(stderr,
			"pkgcachefs: store %s was written by a newer pkgcachefs: upgrade "
			"pkgcachefs "
			"(this is %s) to use it, or pass another --store\n",
			dir, PKGCACHEFS_VERSION);
	else if (r == -EUCLEAN)
		fprintf(stderr,
			"pkgcachefs: store %s: config or index is damaged; pkgcachefs fsck --store "
			"%s tells more\n",
			dir, dir);
	else if (r == -EPERM && store_check_dir(dir, why, sizeof(why)) < 0)
		fprintf(stderr,
			"pkgcachefs: refusing store %s: %s (another user could swap its files: "
			"chown it to the user running pkgcachefs, chmod go-w)\n",
			dir, why);
	else if (r == -EPERM)
		fprintf(stderr,
			"pkgcachefs: refusing store %s: a file or directory in it is a symbolic "
			"link, "
			"not ours, or writable by others\n",
			dir);
	else if (r == -EACCES)
		fprintf(stderr,
			"pkgcachefs: cannot open store %s: %s (a store belongs to the user that "
			"created it: run as that user, or pass --store with your own)\n",
			dir, strerror(-r));
	else
		fprintf(stderr, "pkgcachefs: cannot open store %s: %s\n", dir, strerror(-r));
}
