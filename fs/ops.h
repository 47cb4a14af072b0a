/* SPDX-License-Identifier: MIT */
/* The FUSE low-level operation table; the session's userdata is the struct vfs. */
#pragma once

#include <fuse_lowlevel.h>
#include <stdio.h>

extern const struct fuse_lowlevel_ops pkgcachefs_ops;

/* Print the requests received so far, one "<operation> <count>" line each (none for 0), into f;
 * setattr.mode and the like count what setattr and xattr requests asked (a setattr of mode and
 * times counts in both). For measuring, enabled by $PKGCACHEFS_FUSE_OPS (docs/benchmarks.md). */
void ops_counts_dump(FILE *f);
