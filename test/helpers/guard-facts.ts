/** Literal host and guest facts for the guard's rule tests. */
export { GiB, guestFacts, hostFacts, layout } from './facts';
