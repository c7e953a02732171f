/* One heap misuse per run, chosen by name: the test suite runs it with each build of mapalloc
 * preloaded and expects abort() with a one-line diagnostic (or, where a build is not expected to
 * catch the case, a normal exit). Usage: misuse CASE */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static int global_object;

/* Hide pointers from the compiler so that it neither warns nor folds the misuse away. */
static void* launder(void* pointer) {
  void* volatile copy = pointer;
  return copy;
}
static size_t runtime(size_t value) {
  volatile size_t copy = value;
  return copy;
}

static void* free_in_thread(void* block) {
  free(block);
  return NULL;
}

int main(int argc, char** argv) {
  const char* name = argc > 1 ? argv[1] : "";
  if (strcmp(name, "double-free") == 0) {
    void* block = malloc(runtime(32));
    free(block);
    free(launder(block));
  } else if (strcmp(name, "double-free-later") == 0) {
    void* block = malloc(runtime(32));
    void* others[16];
    for (int i = 0; i < 16; ++i) others[i] = malloc(runtime(32));
    free(block);
    for (int i = 0; i < 16; ++i) free(others[i]);
    free(launder(block));
  } else if (strcmp(name, "double-free-medium") == 0) {
    void* blocks[8];
    for (int i = 0; i < 8; ++i) blocks[i] = malloc(runtime(100000));
    free(blocks[5]);
    free(launder(blocks[5]));
  } else if (strcmp(name, "double-free-remote") == 0) {
    void* block = malloc(runtime(64));
    pthread_t thread;
    pthread_create(&thread, NULL, free_in_thread, block);
    pthread_join(thread, NULL);
    free(launder(block));
  } else if (strcmp(name, "double-free-large") == 0) {
    void* block = malloc(runtime(3 << 20));
    free(block);
    free(launder(block));
  } else if (strcmp(name, "free-stack") == 0) {
    int on_stack = 0;
    free(launder(&on_stack));
  } else if (strcmp(name, "free-global") == 0) {
    free(launder(&global_object));
  } else if (strcmp(name, "free-mapping") == 0) {
    char* mapping = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    free(launder(mapping + 4096));
  } else if (strcmp(name, "free-interior") == 0) {
    char* block = malloc(runtime(64));
    free(launder(block + 16));
  } else if (strcmp(name, "free-neighbour") == 0) {
    /* The next block of the page was carved but never handed out. */
    char* block = malloc(runtime(64));
    free(launder(block + 64));
  } else if (strcmp(name, "free-misaligned") == 0) {
    char* block = malloc(runtime(64));
    free(launder(block + 1));
  } else if (strcmp(name, "free-interior-large") == 0) {
    char* block = malloc(runtime(4 << 20));
    free(launder(block + 4096));
  } else if (strcmp(name, "realloc-freed") == 0) {
    void* block = malloc(runtime(100));
    free(block);
    void* result = realloc(launder(block), runtime(200));
    (void)result;
  } else if (strcmp(name, "realloc-moved-old") == 0) {
    /* The old pointer of a realloc that moved the block is a freed block. */
    void* block = malloc(runtime(100));
    void* moved = realloc(launder(block), runtime(1000));
    if (moved == block) return 4;
    void* result = realloc(launder(block), runtime(50));
    (void)result;
  } else if (strcmp(name, "realloc-interior") == 0) {
    char* block = malloc(runtime(100));
    void* result = realloc(launder(block + 32), runtime(10));
    (void)result;
  } else if (strcmp(name, "usable-size-stack") == 0) {
    int on_stack = 0;
    (void)malloc_usable_size(launder(&on_stack));
  } else if (strcmp(name, "overflow-one-byte") == 0) {
    /* The classic off-by-one: a 24-character string copied with its terminator. */
    char* block = launder(malloc(runtime(24)));
    memset(block, 'x', runtime(24));
    block[runtime(24)] = '\0';
    free(launder(block));
  } else if (strcmp(name, "overflow-after-realloc-grown") == 0 ||
             strcmp(name, "overflow-after-realloc-shrunk") == 0) {
    /* A block resized in place (it still holds the new size): one byte past the new size. */
    size_t size = runtime(strcmp(name, "overflow-after-realloc-grown") == 0 ? 104 : 90);
    char* block = launder(malloc(runtime(100)));
    char* resized = launder(realloc(block, size));
    if (resized != block) return 3; /* (the test expects the resize in place) */
    memset(resized, 'x', size);
    resized[size] = '\0';
    free(launder(resized));
  } else if (strcmp(name, "overflow-one-byte-many") == 0) {
    /* One byte of another value past each of 64 blocks: each escapes with probability 1/255,
       so one of the frees must abort. */
    char* blocks[64];
    for (int i = 0; i < 64; ++i) blocks[i] = launder(malloc(runtime(24)));
    for (int i = 0; i < 64; ++i) memset(blocks[i], 'x', runtime(25));
    for (int i = 0; i < 64; ++i) free(launder(blocks[i]));
  } else if (strcmp(name, "overflow-large") == 0) {
    char* block = launder(malloc(runtime(3 << 20)));
    memset(block, 'x', runtime(3 << 20));
    block[runtime(3 << 20)] = '\0';
    free(launder(block));
  } else if (strcmp(name, "use-after-free-link") == 0) {
    /* Overwrite a freed block's free-list link, then allocate until the allocator follows it. */
    char* blocks[600];
    for (int i = 0; i < 600; ++i) blocks[i] = malloc(runtime(48));
    for (int i = 0; i < 600; ++i) free(blocks[i]);
    for (int i = 0; i < 600; ++i) memset(launder(blocks[i]), 0x41, 8);
    for (int i = 0; i < 2000; ++i) blocks[i % 600] = launder(malloc(runtime(48)));
  } else if (strcmp(name, "write-after-free-quarantined") == 0 ||
             strcmp(name, "write-after-free-quarantined-key") == 0) {
    /* Write into a freed block's first word (or its second: the free key) while it waits in the
       secure build's quarantine, then free until it is evicted (256 random slots: 4,000 frees
       leave it there with probability 2e-7). */
    char* block = launder(malloc(runtime(48)));
    free(block);
    if (strcmp(name, "write-after-free-quarantined") == 0)
      memset(launder(block), 0x41, 8);
    else
      ((volatile char*)launder(block))[12] ^= 1;
    for (int i = 0; i < 4000; ++i) free(launder(malloc(runtime(48))));
  } else if (strcmp(name, "write-after-free-at-exit") == 0) {
    /* The same write, then exit at once: the block never leaves the quarantine. */
    char* block = launder(malloc(runtime(48)));
    free(block);
    memset(launder(block), 0x41, 8);
  } else if (strcmp(name, "wild-write") == 0) {
    /* Not heap misuse: a write to an address far from any heap memory (a page just unmapped,
       among the program's own mappings) must fault without a mapalloc report. */
    char* page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    free(malloc(runtime(16)));
    munmap(page, 4096);
    *(volatile char*)launder(page) = 1;
  } else if (strcmp(name, "zero-on-free") == 0) {
    /* Not misuse: reads a freed block (still in the secure build's quarantine) to see whether
       its bytes past the free-list words were zeroed. Exit 0 if they were, 3 if not. */
    unsigned char* block = launder(malloc(runtime(200)));
    memset(block, 0xab, 200);
    free(block);
    for (int i = 16; i < 200; ++i) {
      if (((volatile unsigned char*)launder(block))[i] != 0) return 3;
    }
  } else if (strcmp(name, "zero-on-free-realloc-shrunk") == 0) {
    /* Not misuse: a block shrunk in place by realloc (exit 4 if it moved); the bytes it gave
       up, past the new size's trailer, read as zeroes? Exit 0 if they do, 3 if not. */
    unsigned char* block = launder(malloc(runtime(200)));
    memset(block, 0xab, 200);
    unsigned char* shrunk = launder(realloc(block, runtime(120)));
    if (shrunk != block) return 4;
    for (int i = 120 + 16; i < 200; ++i) {
      if (((volatile unsigned char*)shrunk)[i] != 0) return 3;
    }
    free(shrunk);
  } else if (strcmp(name, "realloc-grown-old-canary") == 0) {
    /* Not misuse: a block grown in place by realloc (exit 4 if it moved); the 8 bytes past its
       old size, where its canary was, read as zeroes? Exit 0 if they do, 3 if not. */
    unsigned char* block = launder(malloc(runtime(100)));
    memset(block, 0xab, 100);
    unsigned char* grown = launder(realloc(block, runtime(108)));
    if (grown != block) return 4;
    for (int i = 100; i < 108; ++i) {
      if (((volatile unsigned char*)grown)[i] != 0) return 3;
    }
    free(grown);
  } else {
    fprintf(stderr, "unknown case %s\n", name);
    return 2;
  }
  return 0;
}
