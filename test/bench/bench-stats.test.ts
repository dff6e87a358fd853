import test from 'ava';
import fc from 'fast-check';
import {
  fitLine,
  fmt,
  fmtRatio,
  fmtSpread,
  percentile,
  ratio,
  runRatios,
  spread,
  type Spread,
} from '../../bench/stats';

const ONE_TO_TEN = [7, 3, 10, 1, 5, 9, 2, 8, 6, 4];
const THIRTY = Array.from({ length: 30 }, (_, i) => (i * 7) % 30);

const percentiles: Array<[string, number[], number, number]> = [
  ['one sample, p0', [5], 0, 5],
  ['one sample, p100', [5], 100, 5],
  ['1..10, p0 is the smallest', ONE_TO_TEN, 0, 1],
  ['1..10, p10', ONE_TO_TEN, 10, 1],
  ['1..10, p50 is the 5th, not an average', ONE_TO_TEN, 50, 5],
  ['1..10, p51 rounds the rank up', ONE_TO_TEN, 51, 6],
  ['1..10, p90', ONE_TO_TEN, 90, 9],
  ['1..10, p95', ONE_TO_TEN, 95, 10],
  ['1..10, p99', ONE_TO_TEN, 99, 10],
  ['1..10, p100', ONE_TO_TEN, 100, 10],
  ['above 100 is the largest', ONE_TO_TEN, 150, 10],
  ['below 0 is the smallest', ONE_TO_TEN, -5, 1],
  ['three samples, p33', [3, 1, 2], 33, 1],
  ['three samples, p34', [3, 1, 2], 34, 2],
  ['30 samples, p99 is the largest', THIRTY, 99, 29],
  ['30 samples, p50 is the 15th', THIRTY, 50, 14],
  ['30 samples, p96 is the 29th', THIRTY, 96, 28],
  ['numeric order, not text order', [10, 9, 100], 50, 10],
  ['negative and fractional samples', [-1.5, 0.25, -3], 50, -1.5],
];

for (const [name, samples, p, expected] of percentiles) {
  test(`percentile: ${name}`, (t) => {
    t.is(percentile(samples, p), expected);
  });
}

test('percentile of no samples is NaN', (t) => {
  t.true(Number.isNaN(percentile([], 50)));
});

test('percentile and spread leave the samples in their order', (t) => {
  const samples = [3, 1, 2];
  percentile(samples, 50);
  spread(samples);
  t.deepEqual(samples, [3, 1, 2]);
});

const spreads: Array<[string, number[], Spread]> = [
  ['one sample', [7], { n: 1, min: 7, median: 7, max: 7 }],
  ['odd count: the middle one', [3, 1, 2], { n: 3, min: 1, median: 2, max: 3 }],
  ['even count: the mean of the middle two', [4, 1, 3, 2], { n: 4, min: 1, median: 2.5, max: 4 }],
  ['ties in the middle', [-1, 10, 0.5, 0.5], { n: 4, min: -1, median: 0.5, max: 10 }],
  ['numeric order, not text order', [10, 9, 100], { n: 3, min: 9, median: 10, max: 100 }],
  ['five runs', [1312, 1249, 1393, 1300, 1400], { n: 5, min: 1249, median: 1312, max: 1400 }],
];

for (const [name, samples, expected] of spreads) {
  test(`spread: ${name}`, (t) => {
    t.deepEqual(spread(samples), expected);
  });
}

test('spread of no samples: n 0 and NaN figures', (t) => {
  const s = spread([]);
  t.is(s.n, 0);
  t.true(Number.isNaN(s.min) && Number.isNaN(s.median) && Number.isNaN(s.max));
});

const ratios: Array<[number, number, number]> = [
  [3, 2, 1.5],
  [0, 5, 0],
  [250, 100, 2.5],
  [-4, 2, -2],
];

for (const [figure, baseline, expected] of ratios) {
  test(`ratio ${figure} / ${baseline} = ${expected}`, (t) => {
    t.is(ratio(figure, baseline), expected);
  });
}

test('ratio to a zero baseline is NaN', (t) => {
  t.true(Number.isNaN(ratio(5, 0)));
  t.true(Number.isNaN(ratio(0, 0)));
});

const perRun: Array<[string, number[], number[], number[]]> = [
  ['run by run, not median over median', [2, 4, 9], [1, 2, 3], [2, 2, 3]],
  ['only the runs both have', [1, 2, 3], [2], [0.5]],
  ['a missing baseline run yields none', [], [1], []],
  ['a zero baseline yields NaN for its run only', [2, 3], [0, 1.5], [NaN, 2]],
];

for (const [name, runs, baselineRuns, expected] of perRun) {
  test(`runRatios: ${name}`, (t) => {
    t.deepEqual(runRatios(runs, baselineRuns), expected);
  });
}

test('runRatios: the median of per-run ratios is not the ratio of the medians', (t) => {
  const runs = [10, 20, 90];
  const baselineRuns = [5, 40, 30];
  t.deepEqual(runRatios(runs, baselineRuns), [2, 0.5, 3]);
  t.is(spread(runRatios(runs, baselineRuns)).median, 2);
  t.is(ratio(spread(runs).median, spread(baselineRuns).median), 20 / 30);
});

const formats: Array<[number, number | undefined, string]> = [
  [1234.4, undefined, '1234'],
  [100, undefined, '100'],
  [-150, undefined, '-150'],
  [12.34, undefined, '12.3'],
  [1.234, undefined, '1.23'],
  [0.1234, undefined, '0.123'],
  [0, undefined, '0.000'],
  [0.8, 2, '0.80'],
  [4.7, 2, '4.70'],
  [5, 0, '5'],
  [NaN, undefined, 'n/a'],
  [Infinity, 2, 'n/a'],
];

for (const [v, digits, expected] of formats) {
  test(`fmt(${v}, ${digits}) = ${expected}`, (t) => {
    t.is(fmt(v, digits), expected);
  });
}

test('fmtSpread: min / median / max, each with its own digits unless given', (t) => {
  t.is(fmtSpread({ n: 3, min: 1, median: 2.5, max: 250 }), '1.00 / 2.50 / 250');
  t.is(fmtSpread({ n: 3, min: 1, median: 2.5, max: 250 }, 1), '1.0 / 2.5 / 250.0');
  t.is(fmtSpread(spread([])), 'n/a / n/a / n/a');
});

const ratioFormats: Array<[number, string]> = [
  [1.234, '1.23×'],
  [0.159, '0.16×'],
  [12.34, '12.3×'],
  [10, '10.0×'],
  [NaN, 'n/a'],
  [Infinity, 'n/a'],
];

for (const [r, expected] of ratioFormats) {
  test(`fmtRatio(${r}) = ${expected}`, (t) => {
    t.is(fmtRatio(r), expected);
  });
}

test('median of two samples near the largest double is not Infinity, nor outside subnormal neighbours', (t) => {
  t.is(spread([1.7e308, 1.7e308]).median, 1.7e308);
  t.is(spread([-1.7e308, 1.7e308]).median, 0);
  t.is(spread([5e-324, 5e-324]).median, 5e-324);
});

test('property: min ≤ median ≤ max, and every percentile is one of the samples, rising with p', (t) => {
  fc.assert(
    fc.property(
      fc.array(fc.double({ noNaN: true, noDefaultInfinity: true }), { minLength: 1, maxLength: 50 }),
      fc.integer({ min: 0, max: 99 }),
      (xs, p) => {
        const s = spread(xs);
        const a = percentile(xs, p);
        const b = percentile(xs, p + 1);
        return (
          s.n === xs.length &&
          s.min <= s.median &&
          s.median <= s.max &&
          xs.includes(a) &&
          a <= b &&
          s.min === percentile(xs, 0) &&
          s.max === percentile(xs, 100)
        );
      },
    ),
  );
  t.pass();
});

const lines: Array<[string, Array<[number, number]>, { a: number; b: number; maxResidual: number }]> = [
  // The growth section's sizes on an exact line: 40 MiB + 0.1 MiB per VM.
  [
    'three sizes on a line',
    [
      [100, 50],
      [1000, 140],
      [5000, 540],
    ],
    { a: 40, b: 0.1, maxResidual: 0 },
  ],
  // Mean x 1, mean y 1/3, Σ(x−x̄)(y−ȳ) = 0: flat through the mean, the middle point 2/3 above it.
  [
    'a peak in the middle fits flat',
    [
      [0, 0],
      [1, 1],
      [2, 0],
    ],
    { a: 1 / 3, b: 0, maxResidual: 2 / 3 },
  ],
  // x̄ 2, ȳ 3, Sxx 8, Sxy 10: slope 1.25, intercept 0.5; residuals 0.5, −1, 0.5 at x 0, 2, 4.
  [
    'least squares, not through the end points',
    [
      [0, 1],
      [2, 2],
      [4, 6],
    ],
    { a: 0.5, b: 1.25, maxResidual: 1 },
  ],
  ['one point: flat through it', [[1000, 7]], { a: 7, b: 0, maxResidual: 0 }],
  [
    'the same x twice: flat through the mean',
    [
      [5, 1],
      [5, 3],
    ],
    { a: 2, b: 0, maxResidual: 1 },
  ],
  [
    'order does not matter',
    [
      [5000, 540],
      [100, 50],
      [1000, 140],
    ],
    { a: 40, b: 0.1, maxResidual: 0 },
  ],
];

for (const [name, points, expected] of lines) {
  test(`fitLine: ${name}`, (t) => {
    const fit = fitLine(points);
    t.true(Math.abs(fit.a - expected.a) < 1e-9, `intercept ${fit.a}, expected ${expected.a}`);
    t.true(Math.abs(fit.b - expected.b) < 1e-12, `slope ${fit.b}, expected ${expected.b}`);
    t.true(Math.abs(fit.maxResidual - expected.maxResidual) < 1e-9, `residual ${fit.maxResidual}`);
  });
}

test('fitLine of no points is NaN throughout', (t) => {
  const fit = fitLine([]);
  t.true(Number.isNaN(fit.a) && Number.isNaN(fit.b) && Number.isNaN(fit.maxResidual));
});

test('property: points on a line give that line back, with no residual to speak of', (t) => {
  fc.assert(
    fc.property(
      fc.double({ min: -1e3, max: 1e3, noNaN: true }),
      fc.double({ min: -10, max: 10, noNaN: true }),
      fc.uniqueArray(fc.integer({ min: 0, max: 10000 }), { minLength: 2, maxLength: 8 }),
      (a, b, xs) => {
        const fit = fitLine(xs.map((x) => [x, a + b * x]));
        const scale = 1 + Math.abs(a) + Math.abs(b) * 10000;
        return (
          Math.abs(fit.a - a) <= 1e-6 * scale && Math.abs(fit.b - b) <= 1e-9 * scale && fit.maxResidual <= 1e-6 * scale
        );
      },
    ),
  );
  t.pass();
});

test('property: the residuals of a fit sum to zero and the line passes through the means', (t) => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.integer({ min: 0, max: 10000 }), fc.double({ min: -1e4, max: 1e4, noNaN: true })), {
        minLength: 1,
        maxLength: 12,
      }),
      (points: Array<[number, number]>) => {
        const { a, b } = fitLine(points);
        const sum = points.reduce((s, [x, y]) => s + (y - (a + b * x)), 0);
        return Math.abs(sum) <= 1e-6 * (1 + points.reduce((s, [, y]) => s + Math.abs(y), 0));
      },
    ),
  );
  t.pass();
});
