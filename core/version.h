#ifndef ZCD_VERSION_H
#define ZCD_VERSION_H
#define ZCD_VERSION_MAJOR 0
#define ZCD_VERSION_MINOR 1
#define ZCD_VERSION_PATCH 0
#ifndef ZCD_REVISION
#define ZCD_REVISION "dev"
#endif
#endif
