"""BufferPool: buffers kept for the next taker, and only those that can be."""

import mmap

from corso_core.repo.buffers import BufferPool


def test_a_buffer_given_back_is_the_next_one_taken():
    pool = BufferPool(4096, keep=1)
    first = pool.take()
    pool.give(first)
    assert pool.take() is first
    assert pool.take() is not first  # none kept: a new one


def test_only_its_own_kind_of_buffer_is_kept():
    pool = BufferPool(4096, keep=4)
    other_size = mmap.mmap(-1, 8192)
    pool.give(other_size)  # a pack buffer that had to grow, say
    pool.give(bytearray(4096))  # bytes read another way
    pool.give(b"x" * 4096)
    taken = pool.take()
    assert isinstance(taken, mmap.mmap) and len(taken) == 4096
    assert not other_size.closed  # left to its owner


def test_past_keep_a_buffer_is_closed_unless_a_view_of_it_lives():
    pool = BufferPool(4096, keep=1)
    kept, closed, viewed = pool.take(), pool.take(), pool.take()
    pool.give(kept)
    pool.give(closed)
    assert closed.closed and not kept.closed
    view = memoryview(viewed)[:10]
    pool.give(viewed)  # cannot be closed yet: no error, the view still reads it
    assert not viewed.closed and bytes(view) == bytes(10)
