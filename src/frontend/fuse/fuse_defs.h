// The libfuse API version this frontend is written against; include libfuse only through
// this header so every file agrees on it.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
