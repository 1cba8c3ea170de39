// Kernel constants for fanotify pre-content events that Debian 12's <linux/fanotify.h>
// (6.1 UAPI) lacks. Values from the 6.14+ UAPI; see ../shared/KERNEL-FACTS.md.
#pragma once

#include <linux/fanotify.h>

#include <cstdint>

#ifndef FAN_PRE_ACCESS
#define FAN_PRE_ACCESS 0x00100000
#endif
#ifndef FAN_EVENT_INFO_TYPE_RANGE
#define FAN_EVENT_INFO_TYPE_RANGE 6
#endif
#ifndef FAN_MARK_EVICTABLE
#define FAN_MARK_EVICTABLE 0x00000200
#endif
#ifndef FAN_MARK_IGNORE
#define FAN_MARK_IGNORE 0x00000400
#endif
#ifndef FAN_MARK_IGNORE_SURV
#define FAN_MARK_IGNORE_SURV (FAN_MARK_IGNORE | FAN_MARK_IGNORED_SURV_MODIFY)
#endif
#ifndef FAN_DENY_ERRNO
#define FAN_ERRNO_BITS 8
#define FAN_ERRNO_SHIFT (32 - FAN_ERRNO_BITS)
#define FAN_DENY_ERRNO(err) (FAN_DENY | ((((uint32_t)(err)) & 0xff) << FAN_ERRNO_SHIFT))
#endif

namespace hsm::frontend::fan {

// Info record carrying the byte range of a pre-content event.
struct RangeInfo {
  struct fanotify_event_info_header hdr;
  uint32_t pad;
  uint64_t offset;
  uint64_t count;
};

}  // namespace hsm::frontend::fan
