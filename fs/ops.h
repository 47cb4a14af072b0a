/* SPDX-License-Identifier: MIT */
/* The FUSE low-level operation table; the session's userdata is the struct vfs. */
#pragma once

#include <fuse_lowlevel.h>

extern const struct fuse_lowlevel_ops pkgcachefs_ops;
