/**
 * Builds a client-node model object. The models are classes, and the serializer reads their attributes
 * by name, so an instance with the fields assigned is what the generated API expects; `base` (another
 * instance) supplies the fields not given.
 */
export function model<T extends object>(type: new () => T, fields: Partial<T>, base?: T): T {
  return Object.assign(new type(), base, fields);
}
