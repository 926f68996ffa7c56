"""Pure properties of the chunk grid, worker ranges, halos and the fixed combine tree."""
import numpy as np
import pytest
from hypothesis import example, given, strategies as st

from sharedcompute.errors import InputError
from sharedcompute.partition import (DYNAMIC_CHUNKS, MIN_CHUNKS, MIN_SPLIT_BYTES, check_boundary,
                                     chunk_grid, chunk_rows, halo_pieces, map_rows,
                                     pad_whole, split_even, tree_finish, tree_nodes, tree_reduce,
                                     valid_rows)


@given(st.integers(0, 10**7), st.integers(1, 10**6))
def test_chunk_grid_covers_rows_without_overlap(n, row_bytes):
    rpc = chunk_rows(n, row_bytes)
    grid = chunk_grid(n, rpc)
    assert grid[0][0] == 0 and grid[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(grid, grid[1:]))
    assert all(e - s <= rpc for s, e in grid)
    assert rpc == 1 or rpc * row_bytes <= 4 * 1024 * 1024  # chunks stay cache/RAM friendly
    if n * row_bytes <= 64 * 1024:
        assert len(grid) <= 2 * MIN_CHUNKS  # small arrays are not split into tiny pieces
    if n >= MIN_CHUNKS and n * row_bytes >= MIN_CHUNKS * MIN_SPLIT_BYTES:
        assert len(grid) >= MIN_CHUNKS  # ...yet enough pieces to keep every worker busy


@given(st.integers(0, 1000), st.integers(1, 64))
def test_split_even_sizes_differ_by_at_most_one(n, k):
    parts = split_even(n, k)
    sizes = [e - s for s, e in parts]
    assert len(parts) == k and sum(sizes) == n and max(sizes) - min(sizes) <= 1
    assert parts[0][0] == 0 and parts[-1][1] == n


@given(st.integers(1, 5000), st.integers(1, 300), st.integers(1, 16))
def test_shares_of_a_chunk_grid_differ_by_at_most_one_chunk_of_rows(n, rows_per_chunk, k):
    """Whole chunks per worker (an iterate's sweeps, a reduction's tree leaves): the grid's
    last chunk is its short one, and its worker is one that gets a chunk more, so no
    worker has more than one chunk's rows over another (the first workers getting the
    extra chunks left the last short by up to two chunks' rows: 504 and 496 of 1,000)."""
    grid = chunk_grid(n, rows_per_chunk)
    rows = [sum(b - a for a, b in grid[ca:cb]) for ca, cb in split_even(len(grid), k)]
    assert sum(rows) == n
    if len(grid) >= k:
        assert max(rows) - min(rows) <= rows_per_chunk, rows


@given(st.integers(0, 100_000), st.integers(1, 10**6), st.integers(1, 16))
@example(2000, 256, 2)
def test_a_dynamic_maps_grid_is_fine_and_its_shares_as_even_as_it_can_make_them(n, rpc, k):
    """A dynamic map's chunks: at most 1/(DYNAMIC_CHUNKS * workers) of the rows, at least
    half that, and shares of rows no less even than that largest size gives (2,000 rows, 2
    workers: chunks of 10, shares of 1,000 and 1,000, not of 15 and 1,005 and 995)."""
    most = max(1, min(rpc, n // (DYNAMIC_CHUNKS * k)))
    got = map_rows(n, rpc, k, True)
    assert most // 2 < got <= most or got == most == 1

    def spread(r):
        rows = [sum(b - a for a, b in chunk_grid(n, r)[ca:cb])
                for ca, cb in split_even(len(chunk_grid(n, r)), k)]
        return max(rows) - min(rows)
    if 0 < n <= 5000:
        assert spread(got) <= spread(most)
    if (n, rpc, k) == (2000, 256, 2):
        assert got == 10 and spread(got) == 0


@given(st.integers(1, 300), st.integers(1, 8), st.data())
def test_tree_result_is_independent_of_how_ranges_are_split(n_chunks, n_workers, data):
    values = data.draw(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=n_chunks,
                                max_size=n_chunks))
    reference = tree_reduce(0, n_chunks, lambda c: values[c], lambda a, b: a + b)
    cuts = sorted(data.draw(st.lists(st.integers(0, n_chunks), max_size=n_workers)))
    bounds = [0] + cuts + [n_chunks]
    nodes = {}
    for a, b in zip(bounds, bounds[1:]):
        for lo, hi in tree_nodes(0, n_chunks, a, b):
            nodes[(lo, hi)] = tree_reduce(lo, hi, lambda c: values[c], lambda x, y: x + y)
    got = tree_finish(n_chunks, nodes, lambda x, y: x + y)
    assert got == reference  # bitwise, not approximately


@pytest.mark.parametrize("boundary,mode", [("reflect", "symmetric"), ("periodic", "wrap"),
                                           ("nearest", "edge")])
@given(n=st.integers(1, 12), depth=st.integers(1, 30))
def test_padding_matches_numpy_pad(boundary, mode, n, depth):
    x = np.arange(n * 2.0).reshape(n, 2)
    np.testing.assert_array_equal(pad_whole(x, depth, boundary),
                                  np.pad(x, ((depth, depth), (0, 0)), mode=mode))


def test_constant_boundary_pads_with_the_value():
    x = np.ones((3, 2))
    got = pad_whole(x, 2, 7.5)
    assert got.shape == (7, 2) and (got[:2] == 7.5).all() and (got[-2:] == 7.5).all()


@given(st.integers(0, 200), st.integers(0, 5), st.data())
def test_halo_pieces_cover_range_and_in_place_means_in_bounds(n, depth, data):
    lo = data.draw(st.integers(0, n))
    hi = data.draw(st.integers(lo, n))
    pieces = halo_pieces(lo, hi, n, depth)
    covered = [r for s, e, _ in pieces for r in range(s, e)]
    assert covered == list(range(lo, hi))
    for s, e, in_place in pieces:
        assert in_place == (s - depth >= 0 and e + depth <= n)
        if not in_place:
            assert e - s <= max(depth, 1) or n < 2 * depth + 1


def test_valid_rows_with_boundary_none_skips_edges():
    assert valid_rows(10, 2, "none") == (2, 8)
    assert valid_rows(3, 2, "none") == (0, 0)
    assert valid_rows(10, 2, "reflect") == (0, 10)


def test_bad_boundary_is_rejected_with_the_choices():
    with pytest.raises(InputError, match="boundary='wrap' is not one of"):
        check_boundary("wrap")  # scipy's word; ours is 'periodic'
    assert check_boundary("mirror") == "mirror"
    with pytest.raises(InputError, match="must be one of"):
        check_boundary([1])


@given(st.integers(0, 100_000), st.integers(1, 5000), st.data())
def test_a_work_orders_span_is_its_grids_rows(n, rpc, data):
    """WorkOrder.span and n_chunks (arithmetic, so a dynamic call's pieces do not build the
    grid each) give what the chunk grid gives."""
    from sharedcompute.plan import WorkOrder
    order = WorkOrder("map", None, [], n, rpc, None, (0, 0))
    grid = chunk_grid(n, rpc)
    assert order.n_chunks == len(grid)
    ca = data.draw(st.integers(0, len(grid) - 1))
    cb = data.draw(st.integers(ca + 1, len(grid)))
    assert order.span(ca, cb) == (grid[ca][0], grid[cb - 1][1])
