"""Tests of discvbr.fitting: accuracy against scipy, precision against the Cramer-Rao bound,
backends, bad input and voxel screening.

References: scipy.optimize.curve_fit (MINPACK Levenberg-Marquardt, float64), numpy.polyfit,
scipy.stats.rice, and the ground truth of simulated voxels with Rician noise.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from scipy import special, stats
from scipy.optimize import curve_fit

from discvbr import DiscVBRError
from discvbr.fitting import (
    PRESETS,
    FitStatus,
    cramer_rao_sd,
    estimate_noise_sigma,
    fit_monoexp,
    fit_monoexp_tensor,
    get_preset,
    rician_mean,
)

TIMES_4 = np.array([0.0, 10.0, 40.0, 80.0])  # T1rho spin-lock times of the CLI example
TIMES_8 = np.array([0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0])


def simulate(T, S0, times, sigma, rng):
    """Magnitudes |S0 exp(-t/T) + complex Gaussian noise| (Rician), shape (n, E)."""
    T = np.atleast_1d(np.asarray(T, dtype=float))
    S0 = np.broadcast_to(np.asarray(S0, dtype=float), T.shape)
    nu = S0[:, None] * np.exp(-times[None, :] / T[:, None])
    return np.hypot(nu + rng.normal(size=nu.shape) * sigma, rng.normal(size=nu.shape) * sigma)


def monoexp(t, s0, T):
    return s0 * np.exp(-t / T)


def curve_fit_T(y, times, model=monoexp):
    """Per-voxel scipy curve_fit (method 'lm'), the reference the issue names."""
    out = np.empty(len(y))
    for i, yy in enumerate(y):
        out[i] = curve_fit(model, times, yy, p0=(yy[0], 100.0), method="lm")[0][1]
    return out


# --------------------------------------------------------------------------- accuracy


@pytest.mark.parametrize("snr", [50, 100])
@pytest.mark.parametrize("times", [TIMES_4, TIMES_8], ids=["4echoes", "8echoes"])
def test_lm_matches_curve_fit(snr, times):
    # Issue 3 acceptance: |T - T_curve_fit| median <= 1e-3 ms and 99th percentile <= 0.05 ms
    # at SNR >= 50, with the default float32 engine.
    rng = np.random.default_rng(10 + snr + times.size)
    n = 1500
    T = rng.uniform(40, 200, n)
    y = simulate(T, 1000.0, times, 1000.0 / snr, rng)
    reference = curve_fit_T(y, times)
    result = fit_monoexp(y, times)
    assert np.all(result.valid)
    err = np.abs(result.T - reference)
    assert np.median(err) <= 1e-3
    assert np.percentile(err, 99) <= 0.05


def test_low_snr_converges_to_the_curve_fit_optimum():
    # SNR 10: large residuals, where Gauss-Newton alone converges slowly; the Newton-Hessian
    # steps still reach MINPACK's optimum in every voxel within the default 50 iterations.
    rng = np.random.default_rng(21)
    T = rng.uniform(40, 200, 600)
    y = simulate(T, 1000.0, TIMES_4, 100.0, rng)
    reference = curve_fit_T(y, TIMES_4)
    result = fit_monoexp(y, TIMES_4, t_max=1e4)
    assert not np.any(result.status == FitStatus.NOT_CONVERGED)
    ok = result.valid
    assert ok.mean() > 0.99
    err = np.abs(result.T[ok] - reference[ok])
    assert np.median(err) <= 1e-3 and np.percentile(err, 99) <= 0.05


def test_float64_matches_curve_fit_to_its_tolerance():
    # In float64 the engine and MINPACK land on the same optimum to ~1e-5 ms (curve_fit's
    # own xtol is 1.5e-8 relative, i.e. ~3e-6 ms at 200 ms).
    rng = np.random.default_rng(11)
    T = rng.uniform(40, 200, 500)
    y = simulate(T, 1000.0, TIMES_8, 10.0, rng)
    reference = curve_fit_T(y, TIMES_8)
    result = fit_monoexp(y, TIMES_8, dtype="float64")
    assert result.T.dtype == np.float64
    assert np.max(np.abs(result.T - reference)) <= 1e-4


@pytest.mark.parametrize("times", [TIMES_4, TIMES_8], ids=["4echoes", "8echoes"])
def test_bias_precision_and_standard_error_at_snr100(times):
    # Issue 3 acceptance at SNR 100 (S0 / sigma), T from 40 to 200 ms:
    # relative bias < 0.3 %, SD of T within 5 % of the Cramer-Rao bound, and T_sd predicting
    # that spread (root mean square of T_sd within 5 % of the SD of T). 20000 noise draws per
    # T: the standard error of the SD is 0.5 %, of the mean < 0.03 % of T.
    rng = np.random.default_rng(12)
    n, S0, sigma = 20000, 1000.0, 10.0
    for T in (40.0, 80.0, 120.0, 160.0, 200.0):
        result = fit_monoexp(simulate(np.full(n, T), S0, times, sigma, rng), times)
        assert result.valid.all()
        assert abs(result.T.mean() - T) / T < 0.003, T
        sd = result.T.std(ddof=1)
        crb = cramer_rao_sd(T, S0, sigma, times)
        assert abs(sd / crb - 1) < 0.05, (T, sd, crb)
        assert abs(np.sqrt(np.mean(result.T_sd.astype(float) ** 2)) / sd - 1) < 0.05, T


def test_noise_free_data_recovered_exactly():
    T = np.array([5.0, 40.0, 123.4, 250.0, 1000.0])
    S0 = np.array([1.0, 1000.0, 3e4, 50.0, 200.0])
    y = S0[:, None] * np.exp(-TIMES_8 / T[:, None])
    for dtype, rtol in (("float32", 2e-5), ("float64", 1e-10)):
        result = fit_monoexp(y, TIMES_8, dtype=dtype)
        np.testing.assert_allclose(result.T, T, rtol=rtol)
        np.testing.assert_allclose(result.S0, S0, rtol=rtol)
        np.testing.assert_allclose(result.r2, 1.0, atol=1e-4)


def test_two_echoes_exact_with_undefined_standard_error():
    y = np.array([[1000.0, 1000.0 * np.exp(-30.0 / 75.0)]])
    result = fit_monoexp(y, [0.0, 30.0], dtype="float64")
    np.testing.assert_allclose(result.T, [75.0], rtol=1e-9)
    assert result.valid.all()
    assert np.isnan(result.T_sd).all()  # no residual degrees of freedom


def test_r2_matches_its_definition():
    rng = np.random.default_rng(13)
    y = simulate(rng.uniform(40, 200, 300), 500.0, TIMES_8, 25.0, rng)
    result = fit_monoexp(y, TIMES_8, dtype="float64")
    fitted = result.S0[:, None] * np.exp(-TIMES_8 / result.T[:, None])
    rss = ((y - fitted) ** 2).sum(1)
    tss = ((y - y.mean(1, keepdims=True)) ** 2).sum(1)
    np.testing.assert_allclose(result.r2, 1 - rss / tss, rtol=1e-6)


def test_loglinear_matches_weighted_polyfit():
    # numpy.polyfit with w = y minimises sum (y (log y - a - b t))^2: the weights y^2 the
    # log-linear method uses.
    rng = np.random.default_rng(14)
    y = simulate(rng.uniform(40, 200, 200), 1000.0, TIMES_4, 20.0, rng)
    result = fit_monoexp(y, TIMES_4, method="loglinear", dtype="float64")
    for i in range(len(y)):
        slope, intercept = np.polyfit(TIMES_4, np.log(y[i]), 1, w=y[i])
        np.testing.assert_allclose(result.T[i], -1.0 / slope, rtol=1e-8)
        np.testing.assert_allclose(result.S0[i], np.exp(intercept), rtol=1e-8)


# --------------------------------------------------------------------------- Rician


def test_rician_mean_matches_scipy_stats():
    sigma = 2.5
    nu = np.array([0.0, 0.1, 1.0, 3.0, 10.0, 30.0, 75.0])  # scipy's rice.mean overflows beyond b ~ 30
    np.testing.assert_allclose(rician_mean(nu, sigma), stats.rice(nu / sigma, scale=sigma).mean(), rtol=1e-9)
    # High SNR: E[M] = nu + sigma^2 / (2 nu) + O(sigma^4 / nu^3) (Gudbjartsson and Patz 1995).
    nu = np.array([250.0, 1e3, 1e4])
    np.testing.assert_allclose(rician_mean(nu, sigma), nu + sigma**2 / (2 * nu), rtol=1e-8)


def test_rician_fit_matches_curve_fit_of_the_rician_model_and_removes_the_floor_bias():
    # Low SNR: S0 / sigma = 10, last echo at SNR 3.7. The reference model is written here
    # independently (scipy.special.i0e/i1e), fitted by curve_fit.
    rng = np.random.default_rng(15)
    sigma, T_true, times = 10.0, 80.0, np.array([0.0, 10.0, 20.0, 40.0, 60.0, 80.0])
    y = simulate(np.full(2000, T_true), 100.0, times, sigma, rng)

    def rician_model(t, s0, T):
        x = (s0 * np.exp(-t / T)) ** 2 / (4 * sigma**2)
        return sigma * np.sqrt(np.pi / 2) * ((1 + 2 * x) * special.i0e(x) + 2 * x * special.i1e(x))

    reference = curve_fit_T(y[:200], times, rician_model)
    rician = fit_monoexp(y, times, method="rician", noise_sigma=sigma)
    assert rician.valid.all()
    err = np.abs(rician.T[:200] - reference)
    assert np.median(err) <= 1e-3 and np.percentile(err, 99) <= 0.05
    gaussian = fit_monoexp(y, times)
    # The Gaussian fit overestimates T here (median 82.5 ms); the Rician one does not.
    assert abs(np.median(rician.T) - T_true) < 0.5
    assert np.median(gaussian.T) - T_true > 1.5


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_noise_sigma_map_acts_voxel_by_voxel(backend):
    if backend == "torch":
        pytest.importorskip("torch")
    rng = np.random.default_rng(22)
    y = simulate(rng.uniform(40, 200, 400), 200.0, TIMES_4, 20.0, rng).reshape(20, 20, 4)
    sigma_map = np.full((20, 20), 20.0)
    sigma_map[10:] = 30.0
    by_map = fit_monoexp(y, TIMES_4, method="rician", noise_sigma=sigma_map, backend=backend, device="cpu")
    for rows, sigma in ((slice(None, 10), 20.0), (slice(10, None), 30.0)):
        by_scalar = fit_monoexp(y[rows], TIMES_4, method="rician", noise_sigma=sigma, backend=backend, device="cpu")
        np.testing.assert_array_equal(by_map.status[rows], by_scalar.status)
        np.testing.assert_allclose(by_map.T[rows], by_scalar.T, rtol=1e-6, equal_nan=True)
    with pytest.raises(DiscVBRError, match="noise_sigma map"):
        fit_monoexp(y, TIMES_4, noise_sigma=np.ones((20, 19)))


def test_rician_needs_sigma():
    with pytest.raises(DiscVBRError, match="noise_sigma"):
        fit_monoexp(np.ones((2, 4)), TIMES_4, method="rician")


def test_estimate_noise_sigma_from_rayleigh_background():
    rng = np.random.default_rng(16)
    sigma = 7.0
    signal = np.hypot(rng.normal(size=(50, 40, 4)) * sigma, rng.normal(size=(50, 40, 4)) * sigma)
    signal[:10] += 500.0  # tissue, excluded by the background mask
    background = np.zeros((50, 40), bool)
    background[10:] = True
    # 6400 Rayleigh samples: the estimate's relative SE is ~0.6 %.
    assert abs(estimate_noise_sigma(signal, background) / sigma - 1) < 0.03
    with pytest.raises(DiscVBRError, match="empty"):
        estimate_noise_sigma(signal, np.zeros((50, 40), bool))


def test_cramer_rao_sd_matches_numerical_fisher_information():
    times, T, S0, sigma = TIMES_4, 90.0, 800.0, 12.0
    h = 1e-6
    jac = np.stack(
        [
            (monoexp(times, S0 * (1 + h), T) - monoexp(times, S0 * (1 - h), T)) / (2 * S0 * h),
            (monoexp(times, S0, T * (1 + h)) - monoexp(times, S0, T * (1 - h))) / (2 * T * h),
        ],
        axis=1,
    )
    covariance = sigma**2 * np.linalg.inv(jac.T @ jac)
    np.testing.assert_allclose(cramer_rao_sd(T, S0, sigma, times), np.sqrt(covariance[1, 1]), rtol=1e-6)


# --------------------------------------------------------------------------- backends


@pytest.mark.parametrize(
    "options",
    [{}, {"method": "loglinear"}, {"method": "rician", "noise_sigma": 20.0}, {"dtype": "float64"}],
    ids=["lm", "loglinear", "rician", "lm-float64"],
)
def test_torch_cpu_matches_numpy(options):
    # Same algorithm on torch (the CUDA code path, run on the CPU here): equal statuses and
    # T within float32 rounding of the sums (relative 1e-4).
    pytest.importorskip("torch")
    rng = np.random.default_rng(17)
    y = simulate(rng.uniform(20, 300, 5000), 1000.0, TIMES_8, 20.0, rng)
    y[:5, 3] = np.nan
    y[5:10] = 0.0
    a = fit_monoexp(y, TIMES_8, preset="t1rho_b", backend="numpy", **options)
    b = fit_monoexp(y, TIMES_8, preset="t1rho_b", backend="torch", device="cpu", **options)
    assert b.params["backend"] == "torch"
    np.testing.assert_array_equal(a.status, b.status)
    for name in ("T", "S0", "T_sd"):
        np.testing.assert_allclose(getattr(b, name), getattr(a, name), rtol=1e-4, equal_nan=True)
    np.testing.assert_allclose(b.r2, a.r2, atol=1e-5, equal_nan=True)


def test_device_auto_picks_cuda_only_when_present():
    torch = pytest.importorskip("torch")
    result = fit_monoexp(np.full((3, 4), 100.0) * np.exp(-TIMES_4 / 50.0), TIMES_4)
    expected = ("torch", "cuda") if torch.cuda.is_available() else ("numpy", "cpu")
    assert (result.params["backend"], result.params["device"]) == expected


def test_blocks_threads_and_mask_do_not_change_results():
    rng = np.random.default_rng(18)
    y = simulate(rng.uniform(40, 200, 3000), 1000.0, TIMES_4, 15.0, rng).reshape(10, 30, 10, 4)
    mask = rng.random((10, 30, 10)) < 0.7
    # The numpy backend explicitly: on a machine with a GPU "auto" would fit on CUDA, whose
    # kernels round differently for blocks of other sizes (torch is compared with numpy, with a
    # tolerance, by the torch tests below).
    whole = fit_monoexp(y, TIMES_4, backend="numpy")
    pieces = fit_monoexp(y, TIMES_4, backend="numpy", block_size=97, n_threads=2)
    for name in ("T", "S0", "r2", "T_sd", "status"):
        np.testing.assert_array_equal(getattr(pieces, name), getattr(whole, name))
    masked = fit_monoexp(y, TIMES_4, mask.astype(np.uint8) * 3, backend="numpy", block_size=101, n_threads=2)
    assert masked.T.shape == (10, 30, 10)
    np.testing.assert_array_equal(masked.T[mask], whole.T[mask])
    assert np.all(masked.status[~mask] == FitStatus.NOT_FITTED) and np.isnan(masked.T[~mask]).all()


@pytest.mark.parametrize("with_mask", [False, True], ids=["all-voxels", "mask"])
def test_memory_stays_bounded_by_blocks(with_mask):
    # 1 M voxels x 8 echoes (32 MB of float32 input): beyond the five output maps (17 MB),
    # the fit may allocate only block-sized working memory and, with a mask, the indices of
    # one mask scan (1 M voxels, 8 MB), never a copy of the series. A 512x512x64x8 series
    # thus needs its input, its maps and this. tracemalloc sees numpy's allocations.
    n = 1 << 20
    y = np.empty((n, 8), np.float32)
    y[:] = (1000.0 * np.exp(-TIMES_8 / 100.0)).astype(np.float32)
    mask = np.ones(n, bool) if with_mask else None
    outputs = n * (4 * 4 + 1)
    tracemalloc.start()
    try:
        result = fit_monoexp(y, TIMES_8, mask, backend="numpy", n_threads=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.valid.all()
    assert peak - outputs < (22e6 if with_mask else 12e6), peak


def test_scalar_voxel_and_integer_input():
    y = np.round(1000 * np.exp(-TIMES_8 / 60.0)).astype(np.int16)
    result = fit_monoexp(y, TIMES_8)
    assert result.T.shape == ()
    assert abs(float(result.T) - 60.0) < 0.2  # rounding to integers is the only noise


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "times, shape, match",
    [
        ([0, 40, 10, 80], (5, 4), "increasing"),
        ([0, 10, 10, 80], (5, 4), "increasing"),
        ([-5, 10, 40, 80], (5, 4), "negative"),
        ([10], (5, 1), "at least 2"),
        ([0, 10, 40, 80], (5, 3), "does not match"),
        ([0, 10, 40], (5, 4), "does not match"),
    ],
)
def test_bad_times_and_shapes_raise_value_error(times, shape, match):
    with pytest.raises(DiscVBRError, match=match) as info:
        fit_monoexp(np.ones(shape), times)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"method": "cubic"}, "unknown method"),
        ({"preset": "t3"}, "unknown fit preset"),
        ({"t_min": 100.0, "t_max": 50.0}, "t_min < t_max"),
        ({"min_echoes": 5}, "min_echoes"),
        ({"dtype": "float16"}, "dtype"),
        ({"noise_sigma": -1.0}, "positive"),
        ({"backend": "numpy", "device": "cuda"}, "CPU only"),
        ({"device": "tpu"}, "unknown device"),
    ],
)
def test_bad_options_raise(options, match):
    with pytest.raises(DiscVBRError, match=match):
        fit_monoexp(np.ones((2, 4)), TIMES_4, **options)


def test_mask_of_wrong_shape_raises():
    with pytest.raises(DiscVBRError, match="mask of shape"):
        fit_monoexp(np.ones((3, 4, 4)), TIMES_4, np.ones((4, 3), bool))


def test_cuda_device_that_is_not_there_raises():
    # Without a GPU any CUDA device is missing; with one, the index after the last is.
    torch = pytest.importorskip("torch")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    device = f"cuda:{count}" if count else "cuda"
    with pytest.raises(DiscVBRError, match="CUDA device"):
        fit_monoexp(np.ones((2, 4)), TIMES_4, device=device)


def _torch_devices() -> list[str]:
    try:
        import torch
    except ImportError:
        return []
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", _torch_devices())
@pytest.mark.parametrize(
    "options",
    [{}, {"method": "loglinear"}, {"method": "rician", "noise_sigma": 20.0}, {"dtype": "float64"}],
    ids=["lm", "loglinear", "rician", "lm-float64"],
)
def test_tensor_fit_on_its_device_matches_fit_monoexp(device, options):
    # The device-resident entry point screens, fits and labels on the tensor's device; the
    # statuses equal fit_monoexp's on numpy and T, S0, T_sd agree to float32 rounding
    # (relative 1e-4), across several blocks and with a mask.
    import torch

    rng = np.random.default_rng(23)
    y = simulate(rng.uniform(20, 300, 3000), 1000.0, TIMES_8, 20.0, rng)
    y[:3, 3] = [np.nan, np.inf, -np.inf]
    y[3:6] = 0.0
    y[6, 2] = -4.0
    y[7] = 1000.0 * np.exp(-TIMES_8 / 900.0)  # beyond the T1rho threshold
    y = y.reshape(30, 100, 8)
    mask = np.ones((30, 100), bool)
    mask[10:12] = False
    dtype = options.pop("dtype", "float32")
    a = fit_monoexp(y, TIMES_8, mask, preset="t1rho_b", backend="numpy", dtype=dtype, **options)
    signal = torch.as_tensor(y, dtype=getattr(torch, dtype), device=device)
    b = fit_monoexp_tensor(signal, TIMES_8, torch.as_tensor(mask), preset="t1rho_b", block_size=700, **options)
    assert b.T.device.type == device and b.T.dtype == signal.dtype and tuple(b.T.shape) == (30, 100)
    assert b.params["device"].startswith(device) and b.params["t_max_ms"] == a.params["t_max_ms"]
    host = b.to_numpy()
    np.testing.assert_array_equal(host.status, a.status)
    assert set(np.unique(a.status)) >= {FitStatus.NOT_FITTED, FitStatus.NONFINITE_INPUT, FitStatus.LOW_SIGNAL,
                                        FitStatus.NEGATIVE_INPUT, FitStatus.CONVERGED}
    np.testing.assert_array_equal(b.valid.cpu().numpy(), a.valid)
    for name in ("T", "S0", "T_sd"):
        np.testing.assert_allclose(getattr(host, name), getattr(a, name), rtol=1e-4, equal_nan=True)
    np.testing.assert_allclose(host.r2, a.r2, atol=1e-5, equal_nan=True)


def test_tensor_fit_flags_non_convergence_like_the_torch_backend():
    # Two iterations leave voxels unconverged; the same torch arithmetic decides it in both paths.
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(29)
    y = simulate(rng.uniform(40, 200, 2000), 1000.0, TIMES_8, 50.0, rng)
    a = fit_monoexp(y, TIMES_8, backend="torch", device="cpu", max_iter=2)
    b = fit_monoexp_tensor(torch.from_numpy(y.astype(np.float32)), TIMES_8, max_iter=2).to_numpy()
    stuck = a.status == FitStatus.NOT_CONVERGED
    assert 0 < stuck.sum() < stuck.size
    np.testing.assert_array_equal(b.status, a.status)
    np.testing.assert_allclose(b.T, a.T, rtol=1e-6, equal_nan=True)


def test_tensor_fit_bad_input_is_a_clear_error():
    torch = pytest.importorskip("torch")
    with pytest.raises(DiscVBRError, match="torch tensor"):
        fit_monoexp_tensor(np.ones((2, 4)), TIMES_4)
    with pytest.raises(DiscVBRError, match="does not match the 4 times"):
        fit_monoexp_tensor(torch.ones(2, 3), TIMES_4)
    with pytest.raises(DiscVBRError, match="mask of shape"):
        fit_monoexp_tensor(torch.ones(3, 4), TIMES_4, torch.ones(2, dtype=torch.bool))
    with pytest.raises(DiscVBRError, match="needs noise_sigma"):
        fit_monoexp_tensor(torch.ones(3, 4), TIMES_4, method="rician")
    with pytest.raises(DiscVBRError, match="strictly increasing"):
        fit_monoexp_tensor(torch.ones(3, 4), [0.0, 10.0, 10.0, 20.0])
    with pytest.raises(DiscVBRError, match="min_echoes"):
        fit_monoexp_tensor(torch.ones(3, 4), TIMES_4, min_echoes=5)


def test_bad_voxels_are_flagged_and_the_rest_fitted():
    rng = np.random.default_rng(19)
    y = simulate(rng.uniform(40, 200, 40), 1000.0, TIMES_4, 10.0, rng)
    clean = fit_monoexp(y, TIMES_4)
    bad = y.copy()
    bad[0, 1] = np.nan
    bad[1, 3] = np.inf
    bad[2, 0] = -np.inf
    bad[3] = 0.0  # empty voxel
    bad[4, 1:] = 0.0  # one echo of signal
    bad[5, 2] = -3.0
    result = fit_monoexp(bad, TIMES_4)
    expected = [FitStatus.NONFINITE_INPUT] * 3 + [FitStatus.LOW_SIGNAL] * 2 + [FitStatus.NEGATIVE_INPUT]
    np.testing.assert_array_equal(result.status[:6], expected)
    assert np.isnan(result.T[:6]).all() and np.isnan(result.S0[:6]).all() and not result.valid[:6].any()
    np.testing.assert_array_equal(result.T[6:], clean.T[6:])
    assert result.valid[6:].all()
    counts = result.status_counts()
    assert counts["NONFINITE_INPUT"] == 3 and counts["CONVERGED"] == 34


def test_noise_floor_and_out_of_range_and_non_convergence():
    rng = np.random.default_rng(20)
    decay = np.exp(-TIMES_4 / 100.0)
    y = np.stack(
        [
            1000 * decay,  # fine
            1000 * np.exp(-TIMES_4 / 2.0),  # only the first echo above 2 sigma = 20
            1000 * np.exp(-TIMES_4 / 400.0),  # T beyond the T2 threshold
            1000 * np.exp(+TIMES_4 / 100.0),  # growing signal: negative T
        ]
    )
    result = fit_monoexp(y, TIMES_4, preset="t2", noise_sigma=10.0)
    np.testing.assert_array_equal(
        result.status, [FitStatus.CONVERGED, FitStatus.LOW_SIGNAL, FitStatus.T_OUT_OF_RANGE, FitStatus.T_OUT_OF_RANGE]
    )
    assert np.isnan(result.T[1:]).all()
    # One iteration cannot converge from a noisy start: those voxels are flagged, not kept.
    noisy = simulate(rng.uniform(40, 200, 200), 1000.0, TIMES_8, 50.0, rng)
    short = fit_monoexp(noisy, TIMES_8, max_iter=1)
    stuck = short.status == FitStatus.NOT_CONVERGED
    assert stuck.any() and np.isnan(short.T[stuck]).all()


def test_presets_carry_the_paper_thresholds():
    # METHODS.md section 3: data set A T1rho < 250 ms; data set B T1rho < 200 ms, T2 < 150 ms.
    assert (PRESETS["t1rho_a"].t_max, PRESETS["t1rho_b"].t_max, PRESETS["t2"].t_max) == (250.0, 200.0, 150.0)
    assert get_preset("t1rho") == PRESETS["t1rho"] and PRESETS["t1rho"].t_max == 250.0
    y = 1000 * np.exp(-TIMES_4 / np.array([[180.0], [220.0]]))
    assert fit_monoexp(y, TIMES_4, preset="t1rho_a").valid.tolist() == [True, True]
    assert fit_monoexp(y, TIMES_4, preset="t1rho_b").valid.tolist() == [True, False]
    assert fit_monoexp(y, TIMES_4, preset="t2").valid.tolist() == [False, False]
    assert fit_monoexp(y, TIMES_4, preset="t2", t_max=200.0).valid.tolist() == [True, False]
