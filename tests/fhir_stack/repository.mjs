// The in-memory store of the test FHIR server: Medplum's MemoryRepository with
//   * server-assigned meta.versionId / meta.lastUpdated on every write (the engine keeps whatever a
//     client sends on create, so `_lastUpdated` polling would miss a resource POSTed with an old
//     meta.lastUpdated), and
//   * write hooks, so that subscriptions see every create/update whether it came from a plain
//     request, a batch or a transaction (Medplum's updateResource and patchResource both end in
//     createResource).
import { MemoryRepository } from '@medplum/fhir-router';

export class StackRepository extends MemoryRepository {
  constructor() {
    super();
    /** @type {((resource: object, previous: object | undefined) => void)[]} may throw to refuse */
    this.beforeWriteHooks = [];
    /** @type {((resource: object, action: 'create' | 'update') => void)[]} */
    this.afterWriteHooks = [];
    /** @type {((resourceType: string, id: string) => void)[]} */
    this.afterDeleteHooks = [];
    /** @type {(() => void)[]} */
    this.afterClearHooks = [];
    this.internalWrites = 0;
  }

  /** @param {string} resourceType @param {string} id */
  current(resourceType, id) {
    return this.resources.get(resourceType)?.get(id);
  }

  async createResource(resource) {
    // Checked before the first await: updateResource() calls this synchronously.
    const internal = this.internalWrites > 0;
    const previous = resource.id ? this.current(resource.resourceType, resource.id) : undefined;
    const copy = { ...resource, meta: { ...(resource.meta ?? {}) } };
    delete copy.meta.versionId;
    delete copy.meta.lastUpdated;
    if (!internal) {
      for (const hook of this.beforeWriteHooks) {
        hook(copy, previous);
      }
    }
    const stored = await super.createResource(copy);
    if (!internal) {
      for (const hook of this.afterWriteHooks) {
        hook(stored, previous ? 'update' : 'create');
      }
    }
    return stored;
  }

  /** An update made by the server itself (e.g. a Subscription's status): no hooks run. */
  updateInternal(resource) {
    // updateResource() calls createResource() synchronously, which reads the counter before its
    // first await; decrementing right after keeps concurrent writes from being taken as internal.
    this.internalWrites++;
    try {
      return this.updateResource(resource);
    } finally {
      this.internalWrites--;
    }
  }

  async deleteResource(resourceType, id) {
    await super.deleteResource(resourceType, id);
    for (const hook of this.afterDeleteHooks) {
      hook(resourceType, id);
    }
  }

  clear() {
    super.clear();
    for (const hook of this.afterClearHooks ?? []) {
      hook();
    }
  }
}
